"""Image/text pairs: a procedural Multimodal3DIdent, its encoders and trainer (Sec. 5.2)."""
