"""chatforge.tokenizer"""
