// Anchor translation unit of the dst_pch object library (it only carries the PCH).
