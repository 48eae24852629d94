"""A deterministic bag-of-words embedding for the store's semantic search (no model, no
network). Configure it in ``langgraph.json``::

    "store": {"index": {"dims": 8, "embed": "./embeddings.py:embed", "fields": ["text"]}}

Each dimension counts one word of ``VOCABULARY`` in the text, so texts sharing words with a
query score higher against it (cosine similarity).
"""

VOCABULARY = ("cat", "dog", "fish", "bird", "python", "rust", "music", "food")


def embed(texts: list[str]) -> list[list[float]]:
    vectors = []
    for text in texts:
        words = text.lower().replace(",", " ").replace(".", " ").split()
        vectors.append([float(words.count(word)) for word in VOCABULARY])
    return vectors
