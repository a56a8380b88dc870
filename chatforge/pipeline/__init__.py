"""chatforge.pipeline"""
