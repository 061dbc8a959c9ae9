"""A user's script: cosine similarity of two embedding.npy files (flattened)."""
import sys
import numpy as np

a = np.load(f"{sys.argv[1]}/embedding.npy").flatten()
b = np.load(f"{sys.argv[2]}/embedding.npy").flatten()
n = min(len(a), len(b))
print(float(np.dot(a[:n], b[:n]) / (np.linalg.norm(a[:n]) * np.linalg.norm(b[:n]))))
