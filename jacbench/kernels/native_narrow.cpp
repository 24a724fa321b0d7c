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
template <typename T>
static inline T sum(typename Vec<T>::type v) {
  T s = 0;
  for (unsigned i = 0; i < 64 / sizeof(T); i++) s += v[i];
  return s;
}

// This thread's share [b, e) of n rows: one contiguous block per thread.
static inline void share(int64_t n, int64_t& b, int64_t& e) {
  int64_t t = omp_get_thread_num(), threads = omp_get_num_threads();
  int64_t part = (n + threads - 1) / threads;
  b = std::min(n, t * part);
  e = std::min(n, b + part);
}

// Y (m × n) = X (m × k) · Wᵀ for W (n × k): each row of W is dotted with the m rows of X.
// R rows of W at a time share each load of X, R·m accumulators in registers: for one row,
// eight rows of W keep eight loads in flight per load of x (from memory the fastest of 2, 4
// and 8 rows).
template <typename T, int M>
static void rows_times_transposed(const T* w, const T* x, T* y, int64_t n, int64_t k) {
  typedef typename Vec<T>::type V;
  constexpr int R = M <= 2 ? 8 : M <= 4 ? 4 : M <= 8 ? 2 : 1;
  const int64_t lanes = 64 / sizeof(T);
#pragma omp parallel
  {
    int64_t b, e;
    share(n, b, e);
    int64_t i = b;
    for (; i + R <= e; i += R) {
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
    for (; i < e; i++)
      for (int q = 0; q < M; q++) {
        T s = 0;
        for (int64_t j = 0; j < k; j++) s += w[i * k + j] * x[q * k + j];
        y[q * n + i] = s;
      }
  }
}

// Y (m × k) = G (m × n) · W (n × k). Each thread sums its block of rows of W into its own
// partial rows (in its L1 or L2 cache), four rows of W a pass; the partials are added after.
// Splitting the columns instead (no partials) read W in strided pieces: 1.3× slower from
// memory for one row.
template <typename T, int M>
static int rows_times_weight(const T* w, const T* g, T* y, int64_t n, int64_t k) {
  typedef typename Vec<T>::type V;
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
    T* out = partial + omp_get_thread_num() * each;
    memset(out, 0, each * sizeof(T));
    int64_t i = b;
    for (; i + 4 <= e; i += 4) {
      T gi[M][4];
      for (int q = 0; q < M; q++)
        for (int r = 0; r < 4; r++) gi[q][r] = g[q * n + i + r];
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
      for (int q = 0; q < M; q++)
        for (int64_t j = 0; j < k; j++) out[q * padded + j] += w[i * k + j] * g[q * n + i];
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
}
