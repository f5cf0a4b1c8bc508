/* Camera path overlay: flat colour per vertex (see camera_path.vert.glsl). */
void main()
{
  fragColor = finalColor;
}
