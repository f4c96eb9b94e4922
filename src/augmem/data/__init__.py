"""Data preparation: video frames, dirmaps, balanced sampling, distribution, task filelists, datasets, demo data."""
