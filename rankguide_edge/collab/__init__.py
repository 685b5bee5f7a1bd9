"""Collaboration layer: drafting steps with the SRM (``stepping``); policies, backends and the reasoner follow."""
