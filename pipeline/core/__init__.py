"""The vocabulary every part of the pipeline uses: skeletons, frames, boundary checks, kinematics, mesh components,
careful file helpers, and the documented configuration fields."""
