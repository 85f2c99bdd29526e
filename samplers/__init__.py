"""accel.samplers"""
