"""Transfer Learning Studio's compute package: everything that computes, no UI."""
