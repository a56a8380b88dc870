"""chatforge.eval"""
