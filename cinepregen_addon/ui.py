"""The "CinePreGen" sidebar tab of the 3D View: the storyboard list, the active shot, its camera move, references.

The panels only lay out properties and operators; what they show lives in ``properties`` and what the buttons do
in ``operators`` and ``generate``.
"""

from __future__ import annotations

import json

import bpy

from .core.camera_moves import PARAM_SPECS, SHAKE_SPECS
from .core.model_choice import frame_note
from .move_properties import shown_parameters
from .moves import shot_adjustments
from .object_ids import reference_holder
from .preferences import backend_settings
from .shots import chosen_model

STATUS_ICONS = {
    "DRAFT": "GREASEPENCIL",
    "RENDERING": "RENDER_STILL",
    "PASSES_READY": "RENDERLAYERS",
    "QUEUED": "SORTTIME",
    "RUNNING": "PLAY",
    "DONE": "CHECKMARK",
    "FAILED": "ERROR",
    "CANCELLED": "CANCEL",
}


def _active_shot(context):
    board = getattr(context.scene, "cinepregen", None)
    if board is None or not 0 <= board.active_shot_index < len(board.shots):
        return None
    return board.shots[board.active_shot_index]


def _move_label(shot) -> str:
    """The move's kind for the menu button; a draw must not fail on JSON the artist is still typing."""
    try:
        move = json.loads(shot.move_json) if shot.move_json.strip() else {}
    except ValueError:
        return "Invalid Move"
    kind = move.get("kind", "static") if isinstance(move, dict) else "?"
    return str(kind).replace("_", " ").title()


class CINEPREGEN_UL_shots(bpy.types.UIList):
    """One row per shot: name, frame range and status."""

    def draw_item(self, context, layout, data, item, icon, active_data, active_propname, index):
        row = layout.row(align=True)
        row.prop(item, "name", text="", emboss=False, icon="CAMERA_DATA")
        row.label(text=f"{item.frame_start}-{item.frame_end}")
        row.label(text="", icon=STATUS_ICONS.get(item.status, "DOT"))


class _Panel:
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "CinePreGen"


class CINEPREGEN_PT_storyboard(_Panel, bpy.types.Panel):
    bl_label = "Storyboard"
    bl_idname = "CINEPREGEN_PT_storyboard"

    def draw(self, context):
        layout = self.layout
        board = context.scene.cinepregen
        row = layout.row()
        row.template_list("CINEPREGEN_UL_shots", "", board, "shots", board, "active_shot_index", rows=4)
        if len(board.shots) == 0:
            hint = layout.column(align=True)
            hint.label(text="No shots yet: + adds one from the scene camera,", icon="INFO")
            hint.label(text="the camera button one from this view.")
        col = row.column(align=True)
        col.operator("cinepregen.shot_add", icon="ADD", text="")
        col.operator("cinepregen.shot_new_from_view", icon="VIEW_CAMERA", text="")
        col.operator("cinepregen.shot_duplicate", icon="DUPLICATE", text="")
        col.operator("cinepregen.shot_remove", icon="REMOVE", text="")
        col.separator()
        col.operator("cinepregen.shot_move", icon="TRIA_UP", text="").direction = "UP"
        col.operator("cinepregen.shot_move", icon="TRIA_DOWN", text="").direction = "DOWN"
        row = layout.row(align=True)
        row.operator("cinepregen.layout_board", icon="SEQ_STRIP_DUPLICATE")
        row.prop(board, "show_camera_path", text="", icon="CURVE_PATH")
        row = layout.row(align=True)
        row.prop(board, "pass_resolution", text="")
        row.prop(board, "render_clay", toggle=True)
        row = layout.row(align=True)
        if board.models:
            row.prop_search(board, "model", board, "models", text="", icon="OUTLINER_DATA_LIGHTPROBE")
        else:
            row.label(text="Model: the backend's default (Check Backend lists them)")
        row.prop(board, "steps")
        model = chosen_model(board)
        if model is not None and model.quantization:
            layout.label(text=f"{model.name}: {model.quantization}", icon="MOD_DECIM")
        layout.operator("cinepregen.generate_all", icon="RENDER_ANIMATION")
        layout.label(text=f"Backend: {backend_settings(context).url}", icon="LINKED")
        row = layout.row(align=True)
        row.operator("cinepregen.check_backend", icon="URL")
        row.operator("cinepregen.open_board", icon="WINDOW")


class CINEPREGEN_PT_shot(_Panel, bpy.types.Panel):
    bl_label = "Shot"
    bl_idname = "CINEPREGEN_PT_shot"
    bl_parent_id = "CINEPREGEN_PT_storyboard"

    @classmethod
    def poll(cls, context):
        return _active_shot(context) is not None

    def draw(self, context):
        layout = self.layout
        shot = _active_shot(context)
        model = chosen_model(context.scene.cinepregen)
        layout.use_property_split = True
        col = layout.column()
        col.prop(shot, "camera")
        sub = col.column(align=True)
        sub.prop(shot, "frame_start")
        sub.prop(shot, "frame_end")
        col.prop(shot, "shot_size")
        col.prop(shot, "camera_angle")
        sub = col.column(align=True)
        sub.prop(shot, "lens_mm")
        sub.prop(shot, "sensor_mm")
        col.prop(shot, "subject")
        col.operator("cinepregen.frame_subject", icon="CON_CAMERASOLVER")
        if shot.framing_note:
            col.label(text=shot.framing_note, icon="ERROR")
        note = frame_note(shot.frame_end - shot.frame_start + 1, model.frame_rule) if model else ""
        if note:
            col.label(text=note, icon="INFO")
        col.prop(shot, "prompt")
        if model is None:
            col.label(text="Check Backend tells whether the model reads the prompt", icon="INFO")
        elif not model.reads_prompt:
            col.label(text=f"{model.name} has no text encoder: the prompt is kept, not read", icon="INFO")
        row = col.row(align=True)
        row.prop(shot, "seed")
        row.operator("cinepregen.random_seed", text="", icon="FILE_REFRESH")
        col.prop(shot, "notes")
        box = layout.box()
        row = box.row()
        row.label(text=shot.status_message or shot.status.replace("_", " ").title(),
                  icon=STATUS_ICONS.get(shot.status, "DOT"))
        if shot.status in {"RENDERING", "QUEUED", "RUNNING"}:
            box.prop(shot, "progress", slider=True)
            box.operator("cinepregen.cancel_shot", icon="CANCEL")
        row = box.row(align=True)
        row.operator("cinepregen.render_passes", icon="RENDERLAYERS")
        row.operator("cinepregen.generate_shot", icon="RENDER_ANIMATION")
        if shot.bundle_path:
            box.prop(shot, "bundle_path")
        if shot.takes:
            box.label(text="Takes", icon="FILE_MOVIE")
            box.template_list("CINEPREGEN_UL_takes", "", shot, "takes", shot, "active_take_index", rows=2)
            row = box.row(align=True)
            row.operator("cinepregen.use_take", icon="SEQ_SEQUENCER")
            row.operator("cinepregen.preview_take", icon="IMAGE_DATA")
        elif shot.result_path:
            box.prop(shot, "result_path")


class CINEPREGEN_PT_camera_move(_Panel, bpy.types.Panel):
    bl_label = "Camera Move"
    bl_idname = "CINEPREGEN_PT_camera_move"
    bl_parent_id = "CINEPREGEN_PT_storyboard"

    @classmethod
    def poll(cls, context):
        return _active_shot(context) is not None

    def draw(self, context):
        layout = self.layout
        shot = _active_shot(context)
        layout.operator_menu_enum("cinepregen.set_move", "kind", text=_move_label(shot), icon="CAMERA_DATA")
        col = layout.column()
        col.use_property_split = True
        col.prop(shot.move, "easing")
        for key in shown_parameters(shot):
            if PARAM_SPECS[key].unit == "POINT":
                row = col.row(heading=PARAM_SPECS[key].label)
                row.prop(shot.move, f"use_{key}", text="")
                sub = row.column(align=True)
                sub.active = getattr(shot.move, f"use_{key}")
                sub.prop(shot.move, key, text="")
            else:
                col.prop(shot.move, key)
        col.prop(shot.move, "use_shake")
        if shot.move.use_shake:
            sub = col.column(align=True)
            for key in SHAKE_SPECS:
                sub.prop(shot.move, f"shake_{key}")
        if shot.move_note:
            layout.label(text=shot.move_note, icon="ERROR")
        col = layout.column(align=True)
        col.prop(shot, "start_location")
        col.prop(shot, "start_rotation")
        row = layout.row(align=True)
        row.operator("cinepregen.apply_move", icon="KEYFRAME_HLT")
        row.operator("cinepregen.apply_move", text="From Camera", icon="OBJECT_ORIGIN").capture_start = True
        box = layout.box()
        box.label(text="Local adjustments", icon="MODIFIER")
        try:
            rows = shot_adjustments(shot).rows()
        except ValueError as error:  # hand-edited JSON: say what is wrong instead of failing the draw
            rows = []
            box.label(text=f"unreadable: {error}", icon="ERROR")
        if not rows:
            box.label(text="None: move the camera at a frame, then Add Local Offset or Pin")
        for kind, index, sentence in rows:
            row = box.row(align=True)
            row.label(text=sentence, icon={"offset": "ORIENTATION_LOCAL", "keyframe": "PINNED"}.get(kind, "TIME"))
            remove = row.operator("cinepregen.remove_local_adjustment", text="", icon="X")
            remove.kind, remove.index = kind, index
        row = box.row(align=True)
        row.operator("cinepregen.add_local_offset", icon="ADD")
        row.operator("cinepregen.add_local_offset", text="Pin", icon="PINNED").pin = True
        row.operator("cinepregen.clear_local_adjustments", icon="X")


class CINEPREGEN_UL_takes(bpy.types.UIList):
    """One row per generated clip of a shot: take, model and seed."""

    def draw_item(self, context, layout, data, item, icon, active_data, active_propname, index):
        row = layout.row(align=True)
        in_use = bpy.path.abspath(item.clip_path) == bpy.path.abspath(data.result_path)
        row.label(text=item.name, icon="CHECKMARK" if in_use else "FILE_MOVIE")
        row.label(text=f"{item.model or 'default'} seed {item.seed}")


class CINEPREGEN_PT_references(_Panel, bpy.types.Panel):
    bl_label = "References"
    bl_idname = "CINEPREGEN_PT_references"
    bl_parent_id = "CINEPREGEN_PT_storyboard"

    def draw(self, context):
        layout = self.layout
        obj = context.active_object
        if obj is not None and obj.type != "CAMERA":
            layout.label(text=obj.name, icon="OBJECT_DATA")
            holder = reference_holder(obj)
            if holder is not obj:  # a character's meshes render as one object, whose reference its rig keeps
                layout.label(text=f"Part of {holder.name}: its reference is the character's", icon="ARMATURE_DATA")
            layout.prop(holder, "cinepregen_reference", text="")
            row = layout.row(align=True)
            row.operator("cinepregen.bind_reference", icon="IMAGE_DATA")
            row.operator("cinepregen.clear_reference", icon="X")
        else:
            layout.label(text="Select a character or prop", icon="INFO")
        bound = [o for o in context.scene.objects if o.cinepregen_reference]
        for bound_object in bound:
            row = layout.row()
            row.label(text=bound_object.name, icon="OBJECT_DATA")
            row.label(text=bpy.path.basename(bound_object.cinepregen_reference), icon="IMAGE_DATA")


class CINEPREGEN_PT_export(_Panel, bpy.types.Panel):
    bl_label = "Export"
    bl_idname = "CINEPREGEN_PT_export"
    bl_parent_id = "CINEPREGEN_PT_storyboard"
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context):
        layout = self.layout
        board = context.scene.cinepregen
        col = layout.column()
        col.use_property_split = True
        col.prop(board, "export_folder")
        col.prop(board, "export_title")
        col.prop(board, "export_page")
        grid = layout.grid_flow(columns=2, even_columns=True, align=True)
        grid.prop(board, "export_formats")
        row = layout.row(align=True)
        row.operator("cinepregen.export_board", icon="EXPORT")
        row.operator("cinepregen.open_export_folder", text="", icon="FILE_FOLDER")
        if board.export_status:
            if board.export_status.startswith("Exporting"):
                layout.progress(factor=board.export_progress, text=board.export_status)
            else:
                layout.label(text=board.export_status, icon="INFO")


classes = (
    CINEPREGEN_UL_shots,
    CINEPREGEN_PT_storyboard,
    CINEPREGEN_PT_shot,
    CINEPREGEN_PT_camera_move,
    CINEPREGEN_UL_takes,
    CINEPREGEN_PT_references,
    CINEPREGEN_PT_export,
)
