"""Side-by-side speed and quality benchmarks of flowkit against other flow libraries."""
