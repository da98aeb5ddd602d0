"""`mix`: combinations of registered methods, and a filter that keeps harmful augmentations out.

A block under params `augment` with `method: mix` is a *variant*, named by its key, and to every
later stage it is just another method (its runs, files and report rows carry the variant's name):

    augment:
      sr_bt:   {method: mix, methods: [sr, bt]}               # a combination
      pg_kept: {method: mix, methods: [pg], filter: true}     # pg through the filter; its twin is pg

Components. Augmentation k of source record r is made by methods[(k + offset(r)) % m], with
offset(r) = stable_hash(seed, dataset, r's id) % m: with n_aug = m every source gets one
augmentation of each component; with n_aug = 1 each makes about 1/m of them, independently of
record order. A component receives exactly the job it receives when it runs alone (its own name
and params in the seed, `daug.augment.base.job_seed`), and its params are the profile's
`augment.<component>` block: so a mix of [sr] holds sr's own augmentations, and a filtered twin
holds its twin's minus the filtered ones. Mixes and filtered twins pair with the single methods
record by record. Every augmented record keeps `made_by` ({method, params, backend} of its
component).

Filter (`filter: true`). An augmented record is dropped, with every reason it fails:
  copy              it equals its source in every field (`drop_copies`);
  fidelity          the cosine between its and its source's sentence embeddings
                    (daug.augment.quality.fidelities: quality's fidelity, per record) is below `min_fidelity`;
  length            its reply's length over its source reply's is outside `length_ratio`;
  out_of_character  its reply names one of `out_of_character` (being a model, the source work) that
                    its source's reply does not.
The augment metrics list every filtered record's id with its reasons: kept + filtered = augmented.
Exposure stays equal: training passes are by source dialogue (`train.passes: source`), so a source
whose augmentation was filtered is seen as often as any other, through its original.
"""
from __future__ import annotations

from daug import DaugError
from daug.augment import Method, get_method, register
from daug.augment.base import Job, job_seed
from daug.io import stable_hash
from daug.records import FIELDS, record_text

REASONS = ("copy", "fidelity", "length", "out_of_character")


@register
class Mix(Method):
    name = "mix"
    composite = True   # daug.augment.apply builds its components from their `augment.<name>` blocks
    reasons = REASONS  # the filter's, in the order the metrics count them

    @classmethod
    def check(cls, params: dict) -> None:
        methods = params["methods"]
        if not methods or not all(isinstance(m, str) for m in methods) or len(set(methods)) != len(methods):
            raise DaugError(f"method 'mix': methods must be a non-empty list of distinct method names, got {methods!r}")
        for m in methods:
            component = get_method(m)
            if component.baseline or getattr(component, "composite", False):
                raise DaugError(f"method 'mix': {m!r} cannot be a component (only methods that augment can)")
        ratio = params["length_ratio"]
        if (len(ratio) != 2 or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in ratio)
                or not 0 <= ratio[0] < ratio[1]):
            raise DaugError(f"method 'mix': length_ratio must be [low, high] with 0 <= low < high, got {ratio!r}")
        if not -1.0 <= params["min_fidelity"] <= 1.0:
            raise DaugError(f"method 'mix': min_fidelity must be in [-1, 1], got {params['min_fidelity']}")
        terms = params["out_of_character"]
        if terms is not None and (not isinstance(terms, list) or not all(isinstance(t, str) and t for t in terms)):
            raise DaugError(f"method 'mix': out_of_character must list non-empty strings, "
                            f"got {params['out_of_character']!r}")

    def bind(self, components: dict[str, Method]) -> "Mix":
        """The built components, one per name of `methods` (daug.augment.apply.make_method)."""
        missing = [m for m in self.params["methods"] if m not in components]
        if missing:
            raise DaugError(f"method 'mix': component {missing[0]!r} was not built")
        self.components = {m: components[m] for m in self.params["methods"]}
        return self

    def provenance(self) -> dict:
        """The params written with every record: the mix's own and each component's."""
        return {**self.params, "components": {m: c.params for m, c in self.components.items()}}

    def component(self, job: Job) -> str:
        methods = self.params["methods"]
        offset = stable_hash(job.run_seed, job.dataset, job.record["id"]) % len(methods)
        return methods[(job.index + offset) % len(methods)]

    def augment(self, jobs: list[Job]) -> list[dict]:
        results: list[dict | None] = [None] * len(jobs)
        for name, method in self.components.items():
            mine = [i for i, job in enumerate(jobs) if self.component(job) == name]
            own = [Job(jobs[i].record, jobs[i].index,
                       job_seed(jobs[i].run_seed, jobs[i].dataset, name, method.params, jobs[i].record["id"], jobs[i].index),
                       jobs[i].fields, jobs[i].run_seed, jobs[i].dataset) for i in mine]
            batch = getattr(method.backend, "batch_size", None) or len(own) or 1
            made_by = {"method": name, "params": method.params, "backend": method.describe_backend()}
            for start in range(0, len(own), batch):
                out = method.augment(own[start:start + batch])
                if len(out) != len(own[start:start + batch]):
                    raise DaugError(f"method 'mix': component {name!r} returned {len(out)} results "
                                    f"for {len(own[start:start + batch])} jobs")
                for i, res in zip(mine[start:start + batch], out):
                    results[i] = {**res, "made_by": made_by}
        return results

    def screen(self, jobs: list[Job], results: list[dict]) -> list[list[str]]:
        """Per job, the filter's reasons to drop its result (empty: kept); all kept without `filter`."""
        if not self.params["filter"]:
            return [[] for _ in jobs]
        from daug.augment.quality import fidelities

        p = self.params
        cosine = fidelities([record_text(job.record) for job in jobs], [record_text(res) for res in results])
        low, high = p["length_ratio"]
        reasons = []
        for job, res, cos in zip(jobs, results, cosine):
            src_reply, reply = job.record.get("output") or "", res.get("output") or ""
            ratio = len(reply) / max(1, len(src_reply))
            failed = {
                "copy": p["drop_copies"] and all(res.get(f, "") == (job.record.get(f) or "") for f in FIELDS),
                "fidelity": float(cos) < p["min_fidelity"],
                "length": not low <= ratio <= high,
                "out_of_character": any(t in reply and t not in src_reply for t in p["out_of_character"] or ()),
            }
            reasons.append([r for r in REASONS if failed[r]])
        return reasons
