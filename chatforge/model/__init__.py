"""chatforge.model"""
