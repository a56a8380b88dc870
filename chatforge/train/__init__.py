"""chatforge.train"""
