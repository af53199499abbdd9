"""train/models"""
