"""The taxonomy of the bundled organism's thinking traces, with purity against the planted step labels."""

from __future__ import annotations

from saes.taxonomy import behaviour_purity, fit_taxonomy, purity, span_vectors

from ..errors import LensError
from ..models import Model, load_model
from ..organism.behaviours import BEHAVIOUR_OF


def corpus_traces(n: int = 200, seed: int = 99) -> list[dict]:
    """Thinking documents of the organism corpus with their labelled step spans (generator ground truth)."""
    from ..organism import corpus as C

    docs = [d for d in C.generate_corpus(20 * n, seed=seed) if d.thinking][:n]
    return [{"text": d.text, "spans": [[st.start, st.end, st.kind] for st in d.steps]} for d in docs]


def run_taxonomy_organism(thinking=None, *, layer: int | None = None, n_traces: int = 200,
                          n_categories: int = 5, k: int = 1, seed: int = 0, per_category: int = 5,
                          source: str = "generated") -> dict:
    """The taxonomy on the organism's thinking traces, with purity against the step labels.

    source: "generated" (the model's own greedy traces on training problems, labelled by their
    arithmetic; the hybrid paper's setting) or "corpus" (thinking documents of the corpus).
    """
    from . import organism_inputs as O

    m = thinking if isinstance(thinking, Model) else load_model(thinking or "organism:thinking")
    layer = m.n_layers // 2 if layer is None else layer
    site = f"blocks.{layer}.hook_resid_post"
    if source not in ("generated", "corpus"):
        raise LensError(f"source must be 'generated' or 'corpus', got {source!r}")
    traces = O.labelled_traces(m, n=n_traces) if source == "generated" else corpus_traces(n_traces)
    if not traces:
        raise LensError(f"{m.spec} wrote no thinking traces on the training problems")
    x, labels, texts = span_vectors(m, traces, site)
    tax = fit_taxonomy(x, n_categories, k=k, texts=texts, labels=labels, seed=seed)
    return {"site": site, "model": m.spec, "source": source, "n_traces": len(traces), "n_sentences": int(x.shape[0]),
            "n_categories": n_categories,
            "k": k, **purity(tax.categories.tolist(), labels),
            "behaviour_purity": behaviour_purity(tax.categories.tolist(), labels, BEHAVIOUR_OF),
            "top_sentences": {str(c): v for c, v in tax.top_sentences(per_category).items()}}
