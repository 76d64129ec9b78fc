"""Data: dataset folders, image IO, paired transforms, in-memory arrays."""
