"""accel.invertible"""
