"""orchestra"""
