"""accel.kernels"""
