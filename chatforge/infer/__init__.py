"""chatforge.infer"""
