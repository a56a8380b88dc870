"""chatforge.posttrain"""
