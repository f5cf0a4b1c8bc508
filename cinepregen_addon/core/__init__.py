"""Pure-Python core of the add-on: never imports bpy, shared with the backend."""
