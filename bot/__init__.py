"""Telegram adapter: python-telegram-bot handlers that call into ``core``."""
