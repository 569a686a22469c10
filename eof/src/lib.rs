//! EOF containers. Placeholder: EOF decoding and validation land with the EOF issue.
