"""Code that drives Blender (bpy) from the backend side: extension packaging, pass rendering, scene building."""
