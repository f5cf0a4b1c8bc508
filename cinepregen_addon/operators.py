"""The storyboard's operators, one list for ``register()``: shots (``shots``), camera moves (``moves``), and here
the guidance-pass render and reference binding of the active shot's objects."""

from __future__ import annotations

from pathlib import Path

import bpy
from bpy.props import BoolProperty, StringProperty

from . import moves, render_passes, shots
from .object_ids import deformed_meshes, object_named, reference_holder, reference_problem
from .shots import ShotOperator, shot_at


class CINEPREGEN_OT_render_passes(ShotOperator, bpy.types.Operator):
    """Render the active shot's guidance passes (Cycles, CPU) into its shot bundle"""

    bl_idname = "cinepregen.render_passes"
    bl_label = "Render Guidance Passes"

    def run(self, context):
        from . import bundles

        scene = context.scene
        index = scene.cinepregen.active_shot_index
        shot = shot_at(scene, index)
        if not bpy.app.background:  # frame by frame on a timer: Blender stays responsive, Cancel works
            bundles.start_render(scene, index, submit=False)
            self.report({"INFO"}, f"{shot.name}: rendering guidance passes")
            return {"FINISHED"}
        wm = context.window_manager
        wm.progress_begin(0, 100)
        try:
            folder = bundles.render_bundle(scene, index, progress=lambda f, stage: wm.progress_update(int(100 * f)))
        except (ValueError, RuntimeError, OSError):
            raise
        except Exception as error:  # a renderer or EXR failure must reach the artist as a report, not a traceback
            raise RuntimeError(f"{shot.name}: rendering the guidance passes failed: {error!r}") from error
        finally:
            wm.progress_end()
        self.report({"INFO"}, f"{shot.name}: guidance passes written to {folder}")
        return {"FINISHED"}


class CINEPREGEN_OT_bind_reference(bpy.types.Operator):
    """Bind a reference image to an object: it applies in every shot the object appears in"""

    bl_idname = "cinepregen.bind_reference"
    bl_label = "Bind Reference Image"
    bl_options = {"REGISTER", "UNDO"}

    filepath: StringProperty(subtype="FILE_PATH", name="Image", description="The reference image to bind")
    filter_image: BoolProperty(default=True, options={"HIDDEN", "SKIP_SAVE"})
    filter_folder: BoolProperty(default=True, options={"HIDDEN", "SKIP_SAVE"})
    object_name: StringProperty(name="Object", description="Object to bind to (empty: the active object)")

    @classmethod
    def poll(cls, context):
        return context.scene is not None

    def _target(self, context):
        return object_named(bpy.data.objects, self.object_name) if self.object_name else context.active_object

    def invoke(self, context, event):
        target = self._target(context)
        problem = "select the character or prop to bind a reference image to" if target is None \
            else reference_problem(target)  # before the file browser, not after a picture was picked
        if problem:
            self.report({"ERROR"}, problem)
            return {"CANCELLED"}
        context.window_manager.fileselect_add(self)
        return {"RUNNING_MODAL"}

    def execute(self, context):
        obj = self._target(context)
        if obj is None:
            self.report({"ERROR"}, f"no object {self.object_name!r}" if self.object_name else "no active object")
            return {"CANCELLED"}
        problem = reference_problem(obj)
        if problem:
            self.report({"ERROR"}, problem)
            return {"CANCELLED"}
        picked, obj = obj, reference_holder(obj)
        if obj.library is not None:  # Blender would take the binding and drop it when the file is reopened
            self.report({"ERROR"}, f"{obj.name} is linked from {Path(obj.library.filepath).name}, so a reference "
                                   "bound to it is not saved; make it editable (Object > Library Override > Make)")
            return {"CANCELLED"}
        if not self.filepath or not Path(bpy.path.abspath(self.filepath)).is_file():
            self.report({"ERROR"}, f"reference image not found: {self.filepath!r}")
            return {"CANCELLED"}
        try:  # now, not after a whole shot's passes have rendered
            render_passes.read_image_rgb(Path(bpy.path.abspath(self.filepath)))
        except (RuntimeError, ValueError):
            self.report({"ERROR"}, f"{Path(self.filepath).name} is not an image Blender can read; pick a PNG or JPEG")
            return {"CANCELLED"}
        # relative to the saved .blend where possible, so the file and its images move together
        obj.cinepregen_reference = bpy.path.relpath(self.filepath) if bpy.data.filepath else self.filepath
        for part in deformed_meshes(obj):  # the character's one reference replaces any its meshes had
            if part.library is None and part.cinepregen_reference:
                part.cinepregen_reference = ""
        whose = f" (the character {obj.name}, of which {picked.name} is a part)" if picked is not obj else ""
        self.report({"INFO"}, f"{obj.name}: reference {Path(self.filepath).name}{whose}")
        return {"FINISHED"}


class CINEPREGEN_OT_clear_reference(bpy.types.Operator):
    """Unbind an object's reference image"""

    bl_idname = "cinepregen.clear_reference"
    bl_label = "Clear Reference Image"
    bl_options = {"REGISTER", "UNDO"}

    object_name: StringProperty(name="Object", description="Object to clear (empty: the active object)")

    def execute(self, context):
        obj = object_named(bpy.data.objects, self.object_name) if self.object_name else context.active_object
        if obj is None:
            self.report({"ERROR"}, "no object to clear")
            return {"CANCELLED"}
        holder = reference_holder(obj)
        for bound in [holder, *deformed_meshes(holder)]:  # a character's: on its rig and any left on its meshes
            if bound.library is None:
                bound.cinepregen_reference = ""
        return {"FINISHED"}


classes = (
    shots.CINEPREGEN_OT_shot_add,
    shots.CINEPREGEN_OT_shot_duplicate,
    shots.CINEPREGEN_OT_shot_remove,
    shots.CINEPREGEN_OT_shot_move,
    shots.CINEPREGEN_OT_shot_select,
    shots.CINEPREGEN_OT_shot_new_from_view,
    shots.CINEPREGEN_OT_layout_board,
    shots.CINEPREGEN_OT_random_seed,
    moves.CINEPREGEN_OT_apply_move,
    moves.CINEPREGEN_OT_set_move,
    moves.CINEPREGEN_OT_frame_subject,
    moves.CINEPREGEN_OT_add_local_offset,
    moves.CINEPREGEN_OT_clear_local_adjustments,
    moves.CINEPREGEN_OT_remove_local_adjustment,
    CINEPREGEN_OT_render_passes,
    CINEPREGEN_OT_bind_reference,
    CINEPREGEN_OT_clear_reference,
)
