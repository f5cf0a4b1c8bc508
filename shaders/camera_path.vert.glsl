/* Camera path overlay: world-space line vertices with a colour each (path, frame ticks, frustum).
 * Inputs and the interface are declared by the GPUShaderCreateInfo in cinepregen_addon/overlay.py:
 *   in vec3 pos; in vec4 color; push constant mat4 viewProjectionMatrix; out vec4 finalColor. */
void main()
{
  gl_Position = viewProjectionMatrix * vec4(pos, 1.0);
  finalColor = color;
}
