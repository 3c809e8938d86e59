"""Sizes the whole relay agrees on, in one place below every layer that checks them."""

MAX_URL_LENGTH = 16_384
