// The random draws of on-device learning, the same as edgetl/runtime/rng.py:
// mulberry32, integer draws, Fisher-Yates permutations, sampling with
// replacement and the class-balanced epoch order. A fit in the browser visits
// the examples in exactly the order Personalizer.fit does in Python.

export class Mulberry32 {
  constructor(seed) {
    this.state = seed >>> 0;
  }

  nextU32() {
    this.state = (this.state + 0x6d2b79f5) >>> 0;
    const a = this.state;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return (t ^ (t >>> 14)) >>> 0;
  }

  /** An integer in [0, n): floor(u32 * n / 2^32), exact in doubles for n < 2^21. */
  below(n) {
    return Math.floor((this.nextU32() * n) / 4294967296);
  }

  uniform() {
    return this.nextU32() / 4294967296;
  }

  permutation(n) {
    const out = new Int32Array(n);
    for (let i = 0; i < n; i++) out[i] = i;
    for (let i = n - 1; i > 0; i--) {
      const j = this.below(i + 1);
      const t = out[i];
      out[i] = out[j];
      out[j] = t;
    }
    return out;
  }
}

/** One epoch's order of the rows of `labels` (an Int32Array): every class
 * visited as often as the largest one, classes in increasing label order,
 * then the whole order shuffled (rng.balanced_order in Python). */
export function balancedOrder(labels, rng) {
  const members = new Map();
  labels.forEach((c, i) => {
    if (!members.has(c)) members.set(c, []);
    members.get(c).push(i);
  });
  const classes = [...members.keys()].sort((a, b) => a - b);
  const perClass = Math.max(...classes.map((c) => members.get(c).length));
  const order = [];
  for (const c of classes) {
    const m = members.get(c);
    if (m.length === perClass) {
      for (const k of rng.permutation(m.length)) order.push(m[k]);
    } else {
      for (let k = 0; k < perClass; k++) order.push(m[rng.below(m.length)]);
    }
  }
  const shuffle = rng.permutation(order.length);
  return Int32Array.from(shuffle, (k) => order[k]);
}
