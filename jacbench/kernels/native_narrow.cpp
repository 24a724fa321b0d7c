// jacbench's own narrow products (NOTE: [jacbench's own matrix-vector kernels] in native.py):
// a few rows (m ≤ 15) times a row-major W or its transpose, float32 or float64, over the
// threads of the OpenMP runtime torch loaded (the same pool: nothing spins beside torch's).
// Built by native.py with the machine's C++ compiler, -O3 -march=native -fopenmp.
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <algorithm>
#include <utility>

// One 64-byte vector of T: GCC's and Clang's vector extension, so that the same source is
// AVX-512 where the CPU has it, two AVX2 registers where it does not, NEON on ARM.
template <typename T>
struct Vec {
  typedef T type __attribute__((vector_size(64)));
};
template <typename T>
static inline typename Vec<T>::type load(const T* p) {
  typename Vec<T>::type v;
  memcpy(&v, p, 64);  // unaligned
  return v;
}
template <typename T>
static inline void store(T* p, typename Vec<T>::type v) {
  memcpy(p, &v, 64);
}
// The sum of a vector's lanes, halves added pairwise (64 → 32 → 16 bytes, then the last
// lanes): a few shuffles, where a lane-by-lane sum is a chain of dependent scalar adds as
// long as the vector (a third of a 1000-wide dot product's time).
template <typename T>
static inline T sum(typename Vec<T>::type v) {
  typedef T Half __attribute__((vector_size(32)));
  typedef T Quarter __attribute__((vector_size(16)));
  Half a, b;
  memcpy(&a, &v, 32);
  memcpy(&b, reinterpret_cast<const char*>(&v) + 32, 32);
  a += b;
  Quarter c, d;
  memcpy(&c, &a, 16);
  memcpy(&d, reinterpret_cast<const char*>(&a) + 16, 16);
  c += d;
  T s = 0;
  for (unsigned i = 0; i < 16 / sizeof(T); i++) s += c[i];
  return s;
}

// This thread's share [b, e) of n rows: one contiguous block per thread.
static inline void share(int64_t n, int64_t& b, int64_t& e) {
  int64_t t = omp_get_thread_num(), threads = omp_get_num_threads();
  int64_t part = (n + threads - 1) / threads;
  b = std::min(n, t * part);
  e = std::min(n, b + part);
}

// A barrier of the chains' threads, none for a team of one: libgomp's barrier costs about
// 0.3 µs even then (an AMD EPYC VM), 7 µs of a small network's 24 (L = 8, K = 24, P = 6).
static inline void meet(bool alone) {
  if (!alone) {
#pragma omp barrier
  }
}

// One row of W dotted with one vector x, two accumulators along the row.
template <typename T>
static inline T row_dot(const T* w, const T* x, int64_t k) {
  typedef typename Vec<T>::type V;
  const int64_t lanes = 64 / sizeof(T);
  V a = {}, b = {};
  int64_t j = 0;
  for (; j + 2 * lanes <= k; j += 2 * lanes) {
    a += load(w + j) * load(x + j);
    b += load(w + j + lanes) * load(x + j + lanes);
  }
  if (j + lanes <= k) a += load(w + j) * load(x + j), j += lanes;
  T s = sum<T>(a + b);
  for (; j < k; j++) s += w[j] * x[j];
  return s;
}

// Rows [i, i + R) of Y (m × n) = X (m × k) · Wᵀ for W (n × k): each row of W is dotted with
// the m rows of X, the R rows sharing each load of X, R·m accumulators in registers.
template <typename T, int M, int R>
static inline void transposed_rows(const T* w, const T* x, T* y, int64_t n, int64_t k,
                                   int64_t i) {
  typedef typename Vec<T>::type V;
  const int64_t lanes = 64 / sizeof(T);
  V acc[R][M] = {};
  int64_t j = 0;
  for (; j + lanes <= k; j += lanes) {
    V wj[R];
    for (int r = 0; r < R; r++) wj[r] = load(w + (i + r) * k + j);
    for (int q = 0; q < M; q++) {
      V xj = load(x + q * k + j);
      for (int r = 0; r < R; r++) acc[r][q] += wj[r] * xj;
    }
  }
  for (int r = 0; r < R; r++)
    for (int q = 0; q < M; q++) {
      T s = sum<T>(acc[r][q]);
      for (int64_t jj = j; jj < k; jj++) s += w[(i + r) * k + jj] * x[q * k + jj];
      y[q * n + i + r] = s;
    }
}

// Rows [b, e) of Y = X · Wᵀ. For m ≥ 2, R rows of W a pass, about as many as keep R·m
// accumulators and the R rows of W in AVX-512's 32 vector registers; the rows left over one
// at a time, still in vectors. Against one row of W a pass for m ≥ 9 (and a lane-by-lane
// sum), on an AMD EPYC from L2/L3: 1000 × 1000 with 9–15 rows 0.64–0.72 of the time (15
// rows: 2 a pass spill one register and still take 0.70), 2–8 rows 0.83–0.95. For one
// vector through rows longer than half a page, W is read row after row, one stream per
// thread (row_dot): against eight rows a pass (eight streams, each about one 4 KB page),
// same process, the seed chain (P = 1, 1000 wide) took 0.98 / 0.94 / 0.85 of the time at
// L = 3 / 5 / 10, one 1000 × 1000 product 0.65 from memory and 0.89 from cache (1024 and
// 2048 wide: 0.82–0.95); two accumulators beat four (0.81 of the time from memory) and one
// (latency-bound: 3.9× slower from cache). Shorter rows, in cache, keep eight a pass: 256
// and 512 wide took 1.02 and 1.05× as long row after row. Two rows of X, one row of W at
// a time, took 1.10–1.15× longer than eight rows of W a pass.
template <typename T, int M>
static void transposed_share(const T* w, const T* x, T* y, int64_t n, int64_t k, int64_t b,
                             int64_t e) {
  if (M == 1 && k * sizeof(T) > 2048) {
    for (int64_t i = b; i < e; i++) y[i] = row_dot(w + i * k, x, k);
    return;
  }
  constexpr int R = M <= 2 ? 8 : M <= 4 ? 6 : M <= 6 ? 4 : M <= 8 ? 3 : 2;
  int64_t i = b;
  for (; i + R <= e; i += R) transposed_rows<T, M, R>(w, x, y, n, k, i);
  for (; i < e; i++) transposed_rows<T, M, 1>(w, x, y, n, k, i);
}

template <typename T, int M>
static void rows_times_transposed(const T* w, const T* x, T* y, int64_t n, int64_t k) {
#pragma omp parallel
  {
    int64_t b, e;
    share(n, b, e);
    transposed_share<T, M>(w, x, y, n, k, b, e);
  }
}

// One vector's partial row ``out`` of G·W from rows [b, e) of W, the reverse chain's way
// for P = 1 through a wide weight: the rows cut into two halves read side by side (two long
// streams, rows i and i + half), where four neighbouring rows a pass are four short streams,
// each about one 4 KB page, which the hardware prefetchers lose at every row. Same process,
// AMD EPYC, old and new library side by side: the seed chain (1000 wide, P = 1) 0.98 / 0.83
// / 0.85 of the time at L = 3 / 5 / 10, L=4 K=600–1000 0.92–0.98. Not for rows a multiple
// of 1 KB long (two streams a power of two apart share cache sets and memory banks: 2048
// wide, 1.17× slower from memory), nor for weights under 256 KB (a small network's, in
// cache either way: 1.03× as long at K = 100); nor in the per-product kernel, where a
// 600 × 600 weight from cache took 1.07× as long.
template <typename T>
static void two_streams(const T* w, const T* g, const T* slope, T* out, int64_t k,
                        int64_t padded, int64_t b, int64_t e) {
  const int64_t lanes = 64 / sizeof(T), half = (e - b) / 2;
  auto scaled = [&](int64_t i) { return g[i] * (slope ? 1 - slope[i] * slope[i] : T(1)); };
  // out += row i·gi + row i2·gi2 (i2 = i, gi2 = 0 for the row left over)
  auto add = [&](int64_t i, T gi, int64_t i2, T gi2) {
    const T *r = w + i * k, *r2 = w + i2 * k;
    int64_t j = 0;
    for (; j + lanes <= k; j += lanes)
      store(out + j, load(out + j) + load(r + j) * gi + load(r2 + j) * gi2);
    for (; j < k; j++) out[j] += r[j] * gi + r2[j] * gi2;
  };
  memset(out, 0, padded * sizeof(T));
  for (int64_t i = b; i < b + half; i++) add(i, scaled(i), i + half, scaled(i + half));
  if ((e - b) % 2) add(e - 1, scaled(e - 1), e - 1, T(0));
}

// This thread's partial rows ``out`` (m × padded) of Y (m × k) = G (m × n) · W (n × k), from
// rows [b, e) of W, four a pass, or for one vector where ``streams`` allows two_streams' way;
// where ``slope`` is given, G's column i is first scaled by 1 − slope[i]² (tanh's derivative
// from its output: the reverse chain's Σ, read here rather than in a pass of its own).
template <typename T, int M>
static void weight_share(const T* w, const T* g, const T* slope, T* out, int64_t n, int64_t k,
                         int64_t padded, int64_t b, int64_t e, bool streams = false) {
  typedef typename Vec<T>::type V;
  const int64_t lanes = 64 / sizeof(T);
  const int64_t row_bytes = k * sizeof(T);
  if (M == 1 && streams && n * row_bytes >= (1 << 18) && row_bytes % 1024 != 0)
    return two_streams(w, g, slope, out, k, padded, b, e);
  memset(out, 0, M * padded * sizeof(T));
  int64_t i = b;
  for (; i + 4 <= e; i += 4) {
    T gi[M][4];
    for (int q = 0; q < M; q++)
      for (int r = 0; r < 4; r++)
        gi[q][r] = g[q * n + i + r] * (slope ? 1 - slope[i + r] * slope[i + r] : T(1));
    const T *r0 = w + i * k, *r1 = r0 + k, *r2 = r1 + k, *r3 = r2 + k;
    int64_t j = 0;
    for (; j + lanes <= k; j += lanes) {
      V w0 = load(r0 + j), w1 = load(r1 + j), w2 = load(r2 + j), w3 = load(r3 + j);
      for (int q = 0; q < M; q++) {
        T* o = out + q * padded + j;
        store(o, load(o) + w0 * gi[q][0] + w1 * gi[q][1] + w2 * gi[q][2] + w3 * gi[q][3]);
      }
    }
    for (; j < k; j++)
      for (int q = 0; q < M; q++)
        out[q * padded + j] +=
            r0[j] * gi[q][0] + r1[j] * gi[q][1] + r2[j] * gi[q][2] + r3[j] * gi[q][3];
  }
  for (; i < e; i++)
    for (int q = 0; q < M; q++) {
      T gq = g[q * n + i] * (slope ? 1 - slope[i] * slope[i] : T(1));
      for (int64_t j = 0; j < k; j++) out[q * padded + j] += w[i * k + j] * gq;
    }
}

// Y (m × k) = G (m × n) · W (n × k). Each thread sums its block of rows of W into its own
// partial rows (in its L1 or L2 cache); the partials are added after. Splitting the columns
// instead (no partials) read W in strided pieces: 1.3× slower from memory for one row.
template <typename T, int M>
static int rows_times_weight(const T* w, const T* g, T* y, int64_t n, int64_t k) {
  const int64_t lanes = 64 / sizeof(T);
  const int64_t padded = (k + lanes - 1) / lanes * lanes;
  const int64_t each = M * padded;  // a thread's partial rows
  T* partial = static_cast<T*>(aligned_alloc(64, omp_get_max_threads() * each * sizeof(T)));
  if (partial == nullptr) return 1;
  int used = 1;
#pragma omp parallel
  {
#pragma omp single
    used = omp_get_num_threads();
    int64_t b, e;
    share(n, b, e);
    weight_share<T, M>(w, g, nullptr, partial + omp_get_thread_num() * each, n, k, padded, b, e);
  }
  for (int q = 0; q < M; q++) {
    T* row = y + q * k;
    memcpy(row, partial + q * padded, k * sizeof(T));
    for (int t = 1; t < used; t++)
      for (int64_t j = 0; j < k; j++) row[j] += partial[t * each + q * padded + j];
  }
  free(partial);
  return 0;
}

// tanh as a rational function of x (Eigen's and XLA's float tanh: odd degree 13 over even
// degree 6, x clamped to ±7.9988, x itself below 4e-4); within 4e-7 of tanh in float32.
// From |x| = 9.02 (float32's tanh is ±1 from 9.011), exactly ±1: the rational form stops at
// 0.99999982 there, and σ' = 1 − tanh² would be 3.6e-7 for every saturated unit, where
// torch's is 0 (a Jacobian through saturated units 1.7e-8 instead of 0).
// F is float or a vector of floats (GCC's vector ?: in C++).
template <typename F>
static inline F tanh_rational(F a) {
  const F zero = F{};  // not a − a: that is NaN where a is infinite
  const F hi = zero + 7.99881172180175781f, lo = zero - 7.99881172180175781f;
  F x = a > hi ? hi : a;
  x = x < lo ? lo : x;
  const F x2 = x * x;
  F p = x2 * -2.76076847742355e-16f + 2.00018790482477e-13f;
  p = x2 * p + -8.60467152213735e-11f;
  p = x2 * p + 5.12229709037114e-08f;
  p = x2 * p + 1.48572235717979e-05f;
  p = x2 * p + 6.37261928875436e-04f;
  p = x2 * p + 4.89352455891786e-03f;
  p = x * p;
  F q = x2 * 1.19825839466702e-06f + 1.18534705686654e-04f;
  q = x2 * q + 2.26843463243900e-03f;
  q = x2 * q + 4.89352518554385e-03f;
  const F tiny = zero + 0.0004f, saturated = zero + 9.02f, one = zero + 1.0f;
  F t = (a < tiny && a > -tiny) ? a : p / q;
  t = a >= saturated ? one : t;
  return a <= -saturated ? -one : t;
}

// h[b, e) = tanh(z + bias) in place (bias may be null).
static void tanh_share(float* h, const float* bias, int64_t b, int64_t e) {
  typedef Vec<float>::type V;
  const int64_t lanes = 16;
  int64_t i = b;
  for (; i + lanes <= e; i += lanes) {
    V z = load(h + i);
    if (bias) z += load(bias + i);
    store(h + i, tanh_rational<V>(z));
  }
  for (; i < e; i++) h[i] = tanh_rational<float>(h[i] + (bias ? bias[i] : 0.0f));
}

// The whole reverse-mode Jacobian of one input through a tanh network, in one parallel
// region (NOTE: [The reverse chain in one call] in native.py): L hidden weights W_k
// (widths[k+1] × widths[k], row-major), optional biases, the output weight (M × widths[L])
// and x (widths[0]) → J (M × widths[0]). Primal: each thread computes its rows of W_k·h and
// their tanh at once, into h_k; reverse: G ← (G ⊙ (1 − h_k²))·W_k, the scaling read with G,
// each thread's partial rows added by columns after a barrier. A team of ``threads``.
template <int M>
static int reverse_chain(int64_t L, const float* const* w, const float* const* bias,
                         const int64_t* widths, const float* x, const float* w_out, float* jac,
                         int threads) {
  const int64_t lanes = 16;
  int64_t total = 0, widest = 0;
  for (int64_t k = 0; k <= L; k++) widest = std::max(widest, widths[k]);
  for (int64_t k = 1; k <= L; k++) total += widths[k];
  const int64_t padded = (widest + lanes - 1) / lanes * lanes;
  const int64_t each = M * padded;
  float* h = static_cast<float*>(malloc(total * sizeof(float)));
  float* g = static_cast<float*>(malloc(2 * M * widest * sizeof(float)));
  float* partial = static_cast<float*>(aligned_alloc(64, threads * each * sizeof(float)));
  if (!h || !g || !partial) {
    free(h), free(g), free(partial);
    return 1;
  }
#pragma omp parallel num_threads(threads)
  {
    const int used = omp_get_num_threads();
    const bool alone = used == 1;
    float* mine = partial + omp_get_thread_num() * each;
    int64_t b, e;
    const float* in = x;
    float* out = h;
    for (int64_t k = 0; k < L; k++) {  // primal: h_{k+1} = tanh(W_k·h_k + b_k)
      share(widths[k + 1], b, e);
      transposed_share<float, 1>(w[k], in, out, widths[k + 1], widths[k], b, e);
      tanh_share(out, bias ? bias[k] : nullptr, b, e);
      meet(alone);
      in = out;
      out += widths[k + 1];
    }
    const float* adjoint = w_out;  // M × widths[L]
    const float* slope = in;       // h_L
    for (int64_t k = L - 1; k >= 0; k--) {  // reverse: G ← (G ⊙ (1 − h²))·W_k
      const int64_t n = widths[k + 1], cols = widths[k];
      share(n, b, e);
      weight_share<float, M>(w[k], adjoint, slope, mine, n, cols, padded, b, e, true);
      meet(alone);
      float* next = k == 0 ? jac : g + (k % 2) * M * widest;
      share(cols, b, e);
      for (int q = 0; q < M; q++)
        for (int64_t j = b; j < e; j++) {
          float s = partial[q * padded + j];
          for (int t = 1; t < used; t++) s += partial[t * each + q * padded + j];
          next[q * cols + j] = s;
        }
      meet(alone);
      adjoint = next;
      slope -= k > 0 ? widths[k] : 0;  // h_k, the slope of the layer below
    }
  }
  free(h), free(g), free(partial);
  return 0;
}

// The forward-mode Jacobian of one input through a tanh network, in one parallel region
// (NOTE: [The reverse chain in one call] in native.py): the primal row h stacked on the
// D = M − 1 tangent rows, one product of M rows through each W_kᵀ (the weight read once),
// and each thread's rows of the result turned at once into tanh(z) and T ⊙ (1 − tanh²).
// The last product T·W_Fᵀ writes J transposed (D × P). A team of ``threads``.
template <int M>
static int forward_chain(int64_t L, const float* const* w, const float* const* bias,
                         const int64_t* widths, const float* x, const float* w_out,
                         int64_t outputs, float* jac_t, int threads) {
  constexpr int D = M - 1;
  int64_t widest = 0;
  for (int64_t k = 1; k <= L; k++) widest = std::max(widest, widths[k]);
  float* rows = static_cast<float*>(malloc(2 * M * widest * sizeof(float)));
  if (!rows) return 1;
#pragma omp parallel num_threads(threads)
  {
    const bool alone = omp_get_num_threads() == 1;
    int64_t b, e;
    // Layer 1: z = W_1·x; the tangents start as W_1ᵀ's rows, scaled by σ'(z).
    const int64_t n1 = widths[1];
    float* in = rows;
    share(n1, b, e);
    transposed_share<float, 1>(w[0], x, in, n1, D, b, e);
    tanh_share(in, bias ? bias[0] : nullptr, b, e);
    for (int64_t i = b; i < e; i++) {
      const float s = 1 - in[i] * in[i];
      for (int q = 0; q < D; q++) in[(q + 1) * n1 + i] = w[0][i * D + q] * s;
    }
    meet(alone);
    for (int64_t k = 1; k < L; k++) {  // [h; T] ← [tanh(z); T·W_kᵀ ⊙ (1 − tanh²(z))]
      const int64_t n = widths[k + 1];
      float* out = rows + (k % 2) * M * widest;
      share(n, b, e);
      transposed_share<float, M>(w[k], in, out, n, widths[k], b, e);
      tanh_share(out, bias ? bias[k] : nullptr, b, e);
      for (int64_t i = b; i < e; i++) {
        const float s = 1 - out[i] * out[i];
        for (int q = 1; q < M; q++) out[q * n + i] *= s;
      }
      meet(alone);
      in = out;
    }
    share(outputs, b, e);  // J transposed: the tangent rows through W_Fᵀ
    transposed_share<float, D>(w_out, in + widths[L], jac_t, outputs, widths[L], b, e);
  }
  free(rows);
  return 0;
}

template <int... M>
static auto forward_table(std::integer_sequence<int, M...>) {
  using Chain = int (*)(int64_t, const float* const*, const float* const*, const int64_t*,
                        const float*, const float*, int64_t, float*, int);
  static const Chain table[] = {forward_chain<M + 2>...};
  return table;
}

template <int... M>
static auto chain_table(std::integer_sequence<int, M...>) {
  using Chain = int (*)(int64_t, const float* const*, const float* const*, const int64_t*,
                        const float*, const float*, float*, int);
  static const Chain table[] = {reverse_chain<M + 1>...};
  return table;
}

// The kernels for m = 1 … MAX_ROWS rows, by m.
constexpr int MAX_ROWS = 15;
template <typename T>
using Transposed = void (*)(const T*, const T*, T*, int64_t, int64_t);
template <typename T>
using Plain = int (*)(const T*, const T*, T*, int64_t, int64_t);
template <typename T, int... M>
static const Transposed<T>* transposed_table(std::integer_sequence<int, M...>) {
  static const Transposed<T> table[] = {rows_times_transposed<T, M + 1>...};
  return table;
}
template <typename T, int... M>
static const Plain<T>* plain_table(std::integer_sequence<int, M...>) {
  static const Plain<T> table[] = {rows_times_weight<T, M + 1>...};
  return table;
}
// Both entry points take (W, rows, out, m, inner, outer): rows is (m × inner), out (m ×
// outer); W is (outer × inner) for rows·Wᵀ, (inner × outer) for rows·W.
template <typename T>
static int transposed(const T* w, const T* x, T* y, int64_t m, int64_t inner, int64_t outer) {
  if (m < 1 || m > MAX_ROWS) return 2;
  transposed_table<T>(std::make_integer_sequence<int, MAX_ROWS>())[m - 1](w, x, y, outer, inner);
  return 0;
}
template <typename T>
static int plain(const T* w, const T* g, T* y, int64_t m, int64_t inner, int64_t outer) {
  if (m < 1 || m > MAX_ROWS) return 2;
  return plain_table<T>(std::make_integer_sequence<int, MAX_ROWS>())[m - 1](w, g, y, inner, outer);
}

// The C interface (ctypes): 0 done, 1 no memory, 2 rows out of range.
extern "C" {
// out (m × outer) = X (m × inner) · Wᵀ, W (outer × inner) row-major.
int jb_rows_times_transposed_f32(const float* w, const float* x, float* y, int64_t m,
                                 int64_t inner, int64_t outer) {
  return transposed<float>(w, x, y, m, inner, outer);
}
int jb_rows_times_transposed_f64(const double* w, const double* x, double* y, int64_t m,
                                 int64_t inner, int64_t outer) {
  return transposed<double>(w, x, y, m, inner, outer);
}
// out (m × outer) = G (m × inner) · W, W (inner × outer) row-major.
int jb_rows_times_weight_f32(const float* w, const float* g, float* y, int64_t m, int64_t inner,
                             int64_t outer) {
  return plain<float>(w, g, y, m, inner, outer);
}
int jb_rows_times_weight_f64(const double* w, const double* g, double* y, int64_t m,
                             int64_t inner, int64_t outer) {
  return plain<double>(w, g, y, m, inner, outer);
}
// z ← tanh(z) for n floats, over the threads where there are enough to share (the rational
// tanh above: one vectorised pass where torch.tanh may not be vectorised).
void jb_tanh_f32(float* z, int64_t n) {
#pragma omp parallel if (n >= 16384)
  {
    int64_t b, e;
    share((n + 15) / 16, b, e);  // whole vectors to each thread
    tanh_share(z, nullptr, std::min(n, b * 16), std::min(n, e * 16));
  }
}
// The chains' team: ``threads`` where it is positive, else as many as a parallel region of
// the calling thread would have (torch.set_num_threads' count). A count of its own per call
// (NOTE: [One thread for this call only] in team.py) changes nothing for other threads.
static int team(int threads) { return threads > 0 ? threads : omp_get_max_threads(); }
// J (m × widths[0]) of a float32 tanh network at one input x: L hidden weights w[k]
// (widths[k+1] × widths[k]), biases (null, or L vectors), the output weight (m × widths[L]).
int jb_reverse_chain_f32(int64_t L, const float* const* w, const float* const* bias,
                         const int64_t* widths, const float* x, const float* w_out,
                         int64_t outputs, float* jac, int threads) {
  if (outputs < 1 || outputs > MAX_ROWS || L < 1) return 2;
  return chain_table(std::make_integer_sequence<int, MAX_ROWS>())[outputs - 1](
      L, w, bias, widths, x, w_out, jac, team(threads));
}
// Jᵀ (widths[0] × outputs) of the same network by forward mode, widths[0] ≤ MAX_ROWS − 1
// inputs (the primal row and the tangents: at most MAX_ROWS rows).
int jb_forward_chain_f32(int64_t L, const float* const* w, const float* const* bias,
                         const int64_t* widths, const float* x, const float* w_out,
                         int64_t outputs, float* jac_t, int threads) {
  const int64_t d = widths[0];
  if (d < 1 || d > MAX_ROWS - 1 || L < 1) return 2;
  return forward_table(std::make_integer_sequence<int, MAX_ROWS - 1>())[d - 1](
      L, w, bias, widths, x, w_out, outputs, jac_t, team(threads));
}
}
