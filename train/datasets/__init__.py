"""train/datasets"""
