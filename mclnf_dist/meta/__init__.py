"""Meta-learning: FIM loss, inner loops, outer (meta) training and the methods' registry."""
