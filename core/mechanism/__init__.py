"""The mechanism of in-context learning: task vectors (Hendel et al. 2023) and function vectors (Todd et al. 2024)."""
