"""The render settings of a pass render, set for its duration and put back afterwards (``Overrides``): the
common ones (camera, range, size, no border, blur, stereo or non-square pixels), Cycles' data passes under an
emission-only surface, and the Workbench clay pass."""

from __future__ import annotations

from typing import TYPE_CHECKING

import bpy

from .object_ids import bone_shapes

if TYPE_CHECKING:
    from .render_passes import ShotRenderSpec

PASS_MATERIAL = "CinePreGen Pass Surface"
CLAY_MATERIAL = "CinePreGen Clay"
CLAY_SAMPLES = 4


class Overrides:
    """Set attributes for the duration of a render and put the artist's values back afterwards."""

    def __init__(self):
        self._saved = []

    def set(self, owner, attr: str, value) -> None:
        self._saved.append((owner, attr, getattr(owner, attr)))
        setattr(owner, attr, value)

    def restore(self) -> None:
        for owner, attr, value in reversed(self._saved):
            setattr(owner, attr, value)
        self._saved.clear()


def working_view_layer(scene):
    """The view layer the artist works in (what the viewport shows), else the scene's first: a character excluded
    from the first layer but shown in the artist's was missing from the passes."""
    layer = bpy.context.view_layer
    return layer if bpy.context.scene == scene and layer.name in scene.view_layers else scene.view_layers[0]


def set_exr_output(o: Overrides, image_settings) -> None:
    if hasattr(image_settings, "media_type"):  # 5.x chooses single or multilayer here
        o.set(image_settings, "media_type", "MULTI_LAYER_IMAGE")
    o.set(image_settings, "file_format", "OPEN_EXR_MULTILAYER")
    o.set(image_settings, "color_depth", "32")
    o.set(image_settings, "exr_codec", "NONE")  # temporary files, and what read_exr_channels reads


def set_common(o: Overrides, scene, spec: ShotRenderSpec, camera, filepath: str) -> None:
    render = scene.render
    for marker in scene.timeline_markers:  # bound markers would switch cameras mid-shot
        if marker.camera is not None:
            o.set(marker, "camera", None)
    o.set(scene, "camera", camera)  # after the markers: unbinding one may switch the scene camera
    o.set(scene, "frame_start", spec.frame_start)
    o.set(scene, "frame_end", spec.frame_end)
    o.set(scene, "frame_step", 1)
    o.set(render, "resolution_x", spec.resolution[0])
    o.set(render, "resolution_y", spec.resolution[1])
    o.set(render, "resolution_percentage", 100)
    o.set(render, "use_border", False)
    o.set(render, "use_compositing", False)
    o.set(render, "use_sequencer", False)
    o.set(render, "use_motion_blur", False)
    o.set(render, "use_multiview", False)  # stereo views would write one image per eye, under other names
    # square pixels: Blender 5.0.1 cannot write a multilayer EXR with another pixel aspect ("Error writing render
    # result"); the bundle's intrinsics say so (frame_camera)
    o.set(render, "pixel_aspect_x", 1.0)
    o.set(render, "pixel_aspect_y", 1.0)
    o.set(render, "use_file_extension", True)
    o.set(render, "use_overwrite", True)
    o.set(render, "filepath", filepath)
    for shape in bone_shapes().values():  # display helpers, not part of the shot
        o.set(shape, "hide_render", True)


def _override_material(name: str, shader: str, output: str):
    """The material ``name`` (made once): one ``shader`` node into the surface output."""
    material = bpy.data.materials.get(name)
    if material is None:
        material = bpy.data.materials.new(name)
        if material.node_tree is None:  # 4.5: a material has no node tree until it uses nodes
            material.use_nodes = True
        nodes = material.node_tree.nodes
        nodes.clear()
        node = nodes.new(shader)
        material.node_tree.links.new(node.outputs[output], nodes.new("ShaderNodeOutputMaterial").inputs["Surface"])
    return material


def _pass_material():
    """An emission-only surface for every object during the pass render: the passes do not depend on shading,
    and skipping BSDF evaluation and light sampling makes the render about three times faster."""
    return _override_material(PASS_MATERIAL, "ShaderNodeEmission", "Emission")


def set_cycles_passes(o: Overrides, scene) -> object:
    render, cycles = scene.render, scene.cycles
    o.set(render, "engine", "CYCLES")
    o.set(render, "use_persistent_data", True)  # keep the BVH between frames of the animation render
    o.set(cycles, "device", "CPU")
    o.set(cycles, "samples", 1)
    o.set(cycles, "use_adaptive_sampling", False)
    o.set(cycles, "use_denoising", False)
    o.set(cycles, "pixel_filter_type", "BOX")
    o.set(cycles, "filter_width", 0.01)
    for bounces in ("max_bounces", "diffuse_bounces", "glossy_bounces", "transmission_bounces",
                    "volume_bounces", "transparent_max_bounces"):
        o.set(cycles, bounces, 0)
    set_exr_output(o, render.image_settings)
    view_layer = working_view_layer(scene)
    for layer in scene.view_layers:
        o.set(layer, "use", layer == view_layer)
    for flag in ("use_pass_z", "use_pass_normal", "use_pass_object_index", "use_pass_vector"):
        o.set(view_layer, flag, True)
    o.set(view_layer, "material_override", _pass_material())
    return view_layer


def _clay_material():
    """A plain grey diffuse surface (albedo 0.8) for the clay pass."""
    material = _override_material(CLAY_MATERIAL, "ShaderNodeBsdfDiffuse", "BSDF")
    material.node_tree.nodes["Diffuse BSDF"].inputs["Color"].default_value = (0.8, 0.8, 0.8, 1.0)
    return material


def set_clay(o: Overrides, scene) -> object:
    """The clay pass: the shot under the scene's own lights and world with every surface grey diffuse (Cycles,
    denoised), so light, shadow and the set's shapes reach the model as the target render shows them."""
    render, cycles = scene.render, scene.cycles
    o.set(render, "engine", "CYCLES")
    o.set(render, "use_persistent_data", True)
    o.set(cycles, "device", "CPU")
    o.set(cycles, "samples", CLAY_SAMPLES)
    o.set(cycles, "use_adaptive_sampling", False)
    o.set(cycles, "use_denoising", True)
    o.set(cycles, "max_bounces", 2)
    if hasattr(render.image_settings, "media_type"):
        o.set(render.image_settings, "media_type", "IMAGE")
    o.set(render.image_settings, "file_format", "PNG")
    o.set(render.image_settings, "color_mode", "RGB")
    o.set(render.image_settings, "color_depth", "8")
    o.set(scene.view_settings, "view_transform", "Standard")
    o.set(render, "film_transparent", False)
    view_layer = working_view_layer(scene)
    for layer in scene.view_layers:
        o.set(layer, "use", layer == view_layer)
    o.set(view_layer, "material_override", _clay_material())
    return view_layer
