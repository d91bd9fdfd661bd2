"""Camera types every layer above shares: a posed frame and its lens (below ``nerf/``, which
builds rays from them, and ``scenes/``, which reads them from files)."""
