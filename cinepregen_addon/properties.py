"""The storyboard as Blender data: ``scene.cinepregen`` holds the shots, ``Object.cinepregen_reference`` the references.

A shot's global camera move and the artist's local adjustments are stored as JSON strings (``move_json``,
``adjustments_json``) in the formats of ``core.camera_moves`` (``MoveSpec.to_dict``) and ``core.local_adjustments``
(``LocalAdjustments.to_dict``), so they are saved with the .blend and the pure modules stay the one definition of
what they mean. The panel edits the move through ``shot.move`` (``move_properties``: properties with units over
``move_json``); the local layer is shown as sentences (``LocalAdjustments.rows``) and changed by the Add/Pin/Remove
operators.

The board also remembers the backend's models (``models``, filled by Check Backend), the one it generates with
(``model``) and its steps; each shot keeps every clip generated for it as a take (``takes``).

A reference image is bound to an object, not to a shot: it applies in every shot the object appears in. The RNA
property is what the panel shows; its update callback copies the path into the object's custom property
``cinepregen_reference`` (``render_passes.REFERENCE_PROPERTY``), which is what the pass renderer reads. From Blender
5.0 on, ``bpy.props`` values are no longer custom properties, so the copy is needed there (on 4.5 it is the same
storage and the copy is a no-op). The RNA property is overridable: on a library override (a linked character made
editable, the studio way) only such properties are saved, so there the renderer reads it rather than the copy.
"""

from __future__ import annotations

import bpy
from bpy.props import (
    BoolProperty,
    CollectionProperty,
    EnumProperty,
    FloatProperty,
    FloatVectorProperty,
    IntProperty,
    IntVectorProperty,
    PointerProperty,
    StringProperty,
)

from .core.bundle_checks import MAX_PROMPT_LENGTH
from .move_properties import CINEPREGEN_PG_move

REFERENCE_PROPERTY = "cinepregen_reference"
# Paths may be relative to the .blend ("//"); Blender warns on them unless the property says so.
PATH_OPTIONS = {"PATH_SUPPORTS_BLEND_RELATIVE"}

SHOT_SIZE_ITEMS = [
    ("ECU", "Extreme Close-Up", "Eyes to mouth"),
    ("CU", "Close-Up", "Head and top of the shoulders"),
    ("MCU", "Medium Close-Up", "Head to mid-chest"),
    ("MS", "Medium Shot", "Head to waist"),
    ("MFS", "Medium Full Shot", "Head to knees"),
    ("FS", "Full Shot", "Head to toe, just inside the frame"),
    ("LS", "Long Shot", "The whole figure with room around it"),
    ("ELS", "Extreme Long Shot", "A small figure in its surroundings"),
]
CAMERA_ANGLE_ITEMS = [
    ("EYE_LEVEL", "Eye Level", "Level with the subject"),
    ("HIGH", "High", "Looking down on the subject"),
    ("LOW", "Low", "Looking up at the subject"),
    ("OVERHEAD", "Overhead", "Straight down from above"),
    ("DUTCH", "Dutch", "Eye level with the horizon tilted"),
]
EXPORT_FORMAT_ITEMS = [
    ("OTIO", "OTIO", "OpenTimelineIO timeline: the shots in board order with their clips, markers and metadata"),
    ("EDL", "EDL", "CMX 3600 edit decision list for any editing application"),
    ("FBX", "FBX Cameras", "One FBX per shot with its camera baked to a key on every frame (transform and lens)"),
    ("USD", "USD Cameras", "One USD stage with every shot's baked camera"),
    ("PDF", "Storyboard PDF", "Three shots a page: key frames, size, angle, lens, move, prompt and notes"),
    ("CSV", "Shot List CSV", "One row a shot: frame range, timecode in and out, and the same facts"),
]
STATUS_ITEMS = [
    ("DRAFT", "Draft", "Being laid out"),
    ("RENDERING", "Rendering", "Guidance passes being rendered, frame by frame"),
    ("PASSES_READY", "Passes Ready", "Guidance passes rendered into a shot bundle"),
    ("QUEUED", "Queued", "Waiting on the backend"),
    ("RUNNING", "Running", "Being generated"),
    ("DONE", "Done", "The generated clip is ready"),
    ("FAILED", "Failed", "Generation failed"),
    ("CANCELLED", "Cancelled", "Generation was cancelled"),
]


def _is_camera(self, obj) -> bool:
    return obj.type == "CAMERA"


def _mirror_reference(obj, context) -> None:
    path = obj.cinepregen_reference
    if path:
        obj[REFERENCE_PROPERTY] = path
    elif REFERENCE_PROPERTY in obj.keys():
        del obj[REFERENCE_PROPERTY]


def _activate_shot(board, context) -> None:
    from . import shots  # the activation logic lives with the shot operators that also call it

    shots.activate_shot(context.scene, board.active_shot_index)


def _keep_shot_names_unique(shot, context) -> None:
    """A shot renamed to another shot's name gets a ``.NNN`` suffix (a shot's name is its folder and its strip)."""
    from .core.names import unique_name

    board = getattr(shot.id_data, "cinepregen", None)
    if board is None:
        return
    others = {s.name for s in board.shots if s.as_pointer() != shot.as_pointer()}
    if shot.name in others:
        shot.name = unique_name(shot.name, others)


def _toggle_overlay(board, context) -> None:
    from . import overlay

    overlay.sync(context)


class CINEPREGEN_PG_take(bpy.types.PropertyGroup):
    """One generated clip of a shot: which job, model, seed and steps made it, and where it is on disk."""

    name: StringProperty(name="Take", description="Take number and when it arrived")
    job_id: StringProperty(name="Job", description="The backend job that generated it")
    clip_path: StringProperty(name="Clip", subtype="FILE_PATH", options=PATH_OPTIONS, description="The clip's mp4")
    model: StringProperty(name="Model", description="The model that generated it")
    seed: IntProperty(name="Seed", min=0, description="The noise seed it was generated with")
    steps: IntProperty(name="Steps", min=0, description="Denoising steps (0: the model's default)")


class CINEPREGEN_PG_model(bpy.types.PropertyGroup):
    """A model the backend serves, as its /v1/health lists it (filled by Check Backend)."""

    name: StringProperty(name="Model", description="The model's name on the backend")
    family: StringProperty(name="Family", description="Model family (previs: ours; wan-vace: Wan 2.1 VACE)")
    reads_prompt: BoolProperty(name="Reads Prompt", description="Whether the prompt changes the clip")
    default_frames: IntProperty(name="Suggested Length", min=1, description="A new shot's length for this model")
    frame_rule: StringProperty(name="Frame Rule", description="any, or 4k+1 (generated at 4k+1 frames, cut back)")
    default_steps: IntProperty(name="Default Steps", min=0, description="The model's own number of steps")
    quantization: StringProperty(name="Quantization", description="Bits per weight when the model is quantized")


class CINEPREGEN_PG_shot(bpy.types.PropertyGroup):
    """One shot of the storyboard: its camera, frame range, framing, move and generation state."""

    name: StringProperty(name="Name", default="Shot", update=_keep_shot_names_unique,
                         description="The shot's name: its folder on disk and its strip in the sequencer")
    camera: PointerProperty(name="Camera", type=bpy.types.Object, poll=_is_camera,
                            description="The camera this shot is seen through; its keys in the shot's frames are "
                                        "the shot's move")
    frame_start: IntProperty(name="Start", default=1, min=0, description="First frame of the shot on the timeline")
    frame_end: IntProperty(name="End", default=48, min=0, description="Last frame of the shot on the timeline")
    shot_size: EnumProperty(name="Shot Size", items=SHOT_SIZE_ITEMS, default="MS",
                            description="How much of the subject Frame Subject fits in the frame")
    camera_angle: EnumProperty(name="Camera Angle", items=CAMERA_ANGLE_ITEMS, default="EYE_LEVEL",
                               description="Where Frame Subject puts the camera relative to the subject")
    start_location: FloatVectorProperty(name="Start Location", subtype="TRANSLATION", size=3,
                                        description="Where the global camera move starts")
    start_rotation: FloatVectorProperty(name="Start Rotation", subtype="EULER", size=3,
                                        description="The camera's rotation where the global camera move starts")
    has_start_pose: BoolProperty(name="Has Start Pose", default=False, options={"HIDDEN"},
                                 description="Whether the start pose was taken from the camera")
    lens_mm: FloatProperty(name="Lens", default=50.0, min=1.0, soft_max=300.0, unit="CAMERA",
                           description="Focal length at the start of the move (a zoom or dolly zoom changes it)")
    sensor_mm: FloatProperty(name="Sensor", default=36.0, min=1.0, soft_max=100.0, unit="CAMERA",
                             description="Sensor width of the camera (36 mm: full frame)")
    subject: PointerProperty(name="Subject", type=bpy.types.Object, description="What the shot frames and follows")
    framing_note: StringProperty(name="Framing Note", options={"HIDDEN"},
                                 description="What Frame Subject had to change (for example a camera under the floor)")
    prompt: StringProperty(name="Prompt", maxlen=MAX_PROMPT_LENGTH,
                           description="What the generated clip shows (read by models with a text encoder; the panel "
                                       "says whether the chosen model has one)")
    notes: StringProperty(name="Notes", description="Notes for the storyboard PDF and the shot list (exports)")
    seed: IntProperty(name="Seed", default=0, min=0,
                      description="Noise seed: the same passes, model and seed give the same clip")
    status: EnumProperty(name="Status", items=STATUS_ITEMS, default="DRAFT", description="Where the shot is")
    status_message: StringProperty(name="Status Message", description="What happened last to the shot")
    progress: FloatProperty(name="Progress", default=0.0, min=0.0, max=1.0, subtype="FACTOR",
                            description="How far the pass render or the generation is")
    job_id: StringProperty(name="Job", description="The backend job of the shot's latest take")
    result_path: StringProperty(name="Result", subtype="FILE_PATH", options=PATH_OPTIONS,
                                description="The clip in the sequencer (the take in use)")
    bundle_path: StringProperty(name="Shot Bundle", subtype="DIR_PATH", options=PATH_OPTIONS,
                                description="Folder of the shot's rendered guidance passes")
    takes: CollectionProperty(type=CINEPREGEN_PG_take, description="Every clip generated for the shot, oldest first")
    active_take_index: IntProperty(name="Take", default=0, min=0, description="The take selected in the list")
    bundle_fingerprint: StringProperty(name="Bundle Fingerprint", options={"HIDDEN"},
                                       description="Hash of what the shot's bundle was rendered from")
    move_json: StringProperty(name="Camera Move", description="Global camera move (camera_moves.MoveSpec as JSON)")
    move: PointerProperty(type=CINEPREGEN_PG_move, name="Move", description="The move's parameters (over move_json)")
    move_note: StringProperty(name="Move Note", options={"HIDDEN"},
                              description="Why the last change of the move could not be keyed")
    adjustments_json: StringProperty(
        name="Local Adjustments", description="The artist's layer over the move (local_adjustments.LocalAdjustments)"
    )


class CINEPREGEN_PG_storyboard(bpy.types.PropertyGroup):
    """The scene's storyboard: shots in order, the active one, and the viewport overlay toggle."""

    shots: CollectionProperty(type=CINEPREGEN_PG_shot, description="The board's shots, in board order")
    active_shot_index: IntProperty(name="Active Shot", default=0, min=0, update=_activate_shot,
                                   description="The shot the panel shows; selecting one moves the timeline to it")
    show_camera_path: BoolProperty(
        name="Show Camera Path",
        description="Draw the active shot's camera path and frustum in the 3D View",
        default=False,
        update=_toggle_overlay,
    )
    pass_resolution: IntVectorProperty(
        name="Pass Resolution", size=2, default=(256, 144), min=16, max=2048,
        description="Width and height of every shot's guidance passes, and so of its generated clip "
                    "(multiples of 16 in 16:9 suit the default model)",
    )
    models: CollectionProperty(type=CINEPREGEN_PG_model,
                               description="Models the backend serves (Check Backend fills the list)")
    model: StringProperty(name="Model", description="The backend model every shot of the board is generated with "
                                                    "(empty: the backend's default; Check Backend lists them)")
    steps: IntProperty(name="Steps", default=0, min=0, soft_max=100,
                       description="Denoising steps per shot (0: the model's own default); more is slower and "
                                   "usually cleaner")
    export_folder: StringProperty(
        name="Export Folder", subtype="DIR_PATH", options=PATH_OPTIONS,
        description="Where Export Board writes (empty: a <file>_exports folder beside the saved .blend)")
    export_formats: EnumProperty(
        name="Formats", options={"ENUM_FLAG"}, items=EXPORT_FORMAT_ITEMS,
        default={key for key, _, _ in EXPORT_FORMAT_ITEMS}, description="What Export Board writes")
    export_page: EnumProperty(name="Page", items=[("A4", "A4", "ISO A4, landscape"),
                                                  ("Letter", "Letter", "US Letter, landscape")],
                              default="A4", description="Page size of the storyboard PDF")
    export_title: StringProperty(name="Title", description="The board's title in the exported files (empty: the "
                                                           "file's name)")
    export_status: StringProperty(name="Export Status", options={"HIDDEN"},
                                  description="What the last export did, or how far the running one is")
    export_progress: FloatProperty(name="Export Progress", default=0.0, min=0.0, max=1.0, subtype="FACTOR",
                                   options={"HIDDEN"}, description="How far the running export is")
    render_clay: BoolProperty(
        name="Clay Pass", default=True,
        description="Also render each shot under its own lights with grey surfaces, which models with shading "
                    "inputs (the default model) use to match the set's light and shadow; costs a Cycles render",
    )


classes = (CINEPREGEN_PG_move, CINEPREGEN_PG_take, CINEPREGEN_PG_model, CINEPREGEN_PG_shot, CINEPREGEN_PG_storyboard)


def register_properties() -> None:
    bpy.types.Scene.cinepregen = PointerProperty(type=CINEPREGEN_PG_storyboard)
    bpy.types.Object.cinepregen_reference = StringProperty(
        name="Reference Image",
        description="Image of this character or prop, used in every shot it appears in",
        subtype="FILE_PATH",
        options=PATH_OPTIONS,
        override={"LIBRARY_OVERRIDABLE"},  # a linked character made editable by an override keeps its reference
        update=_mirror_reference,
    )


def unregister_properties() -> None:
    del bpy.types.Object.cinepregen_reference
    del bpy.types.Scene.cinepregen
