"""accel.adjoint"""
