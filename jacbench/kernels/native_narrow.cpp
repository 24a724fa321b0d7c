// jacbench's own narrow products (NOTE: [jacbench's own matrix-vector kernels] in native.py):
// y = W·x and y = g·W for a row-major W, float32 or float64, over the threads of the OpenMP
// runtime torch loaded (the same pool, so nothing spins beside torch's threads).
// Built by native.py with the machine's C++ compiler, -O3 -march=native -fopenmp.
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <algorithm>

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

// y (n) = W (n × k) · x (k). R rows of W at a time share each load of x: eight rows keep
// eight loads of W in flight per load of x (from memory the fastest of 2, 4 and 8 rows).
template <typename T, int R>
static void weight_times_vector(const T* w, const T* x, T* y, int64_t n, int64_t k) {
  typedef typename Vec<T>::type V;
  const int64_t lanes = 64 / sizeof(T);
#pragma omp parallel
  {
    int64_t b, e;
    share(n, b, e);
    int64_t i = b;
    for (; i + R <= e; i += R) {
      V acc[R] = {};
      int64_t j = 0;
      for (; j + lanes <= k; j += lanes) {
        V xj = load(x + j);
        for (int r = 0; r < R; r++) acc[r] += load(w + (i + r) * k + j) * xj;
      }
      for (int r = 0; r < R; r++) {
        T s = sum<T>(acc[r]);
        for (int64_t jj = j; jj < k; jj++) s += w[(i + r) * k + jj] * x[jj];
        y[i + r] = s;
      }
    }
    for (; i < e; i++) {
      T s = 0;
      for (int64_t j = 0; j < k; j++) s += w[i * k + j] * x[j];
      y[i] = s;
    }
  }
}

// y (k) = g (n) · W (n × k). Each thread sums its block of rows into its own partial row
// (in its L1 cache), four rows a pass; the partial rows are added after. Splitting the
// columns instead (no partials) read W in strided pieces: 1.3× slower from memory.
template <typename T>
static int weight_rows_times_vector(const T* w, const T* g, T* y, int64_t n, int64_t k) {
  typedef typename Vec<T>::type V;
  const int64_t lanes = 64 / sizeof(T);
  int64_t padded = (k + lanes - 1) / lanes * lanes;
  T* partial = static_cast<T*>(aligned_alloc(64, omp_get_max_threads() * padded * sizeof(T)));
  if (partial == nullptr) return 1;
  int used = 1;
#pragma omp parallel
  {
#pragma omp single
    used = omp_get_num_threads();
    int64_t b, e;
    share(n, b, e);
    T* out = partial + omp_get_thread_num() * padded;
    memset(out, 0, k * sizeof(T));
    int64_t i = b;
    for (; i + 4 <= e; i += 4) {
      T g0 = g[i], g1 = g[i + 1], g2 = g[i + 2], g3 = g[i + 3];
      const T *r0 = w + i * k, *r1 = r0 + k, *r2 = r1 + k, *r3 = r2 + k;
      int64_t j = 0;
      for (; j + lanes <= k; j += lanes)
        store(out + j, load(out + j) + load(r0 + j) * g0 + load(r1 + j) * g1 +
                           load(r2 + j) * g2 + load(r3 + j) * g3);
      for (; j < k; j++) out[j] += r0[j] * g0 + r1[j] * g1 + r2[j] * g2 + r3[j] * g3;
    }
    for (; i < e; i++)
      for (int64_t j = 0; j < k; j++) out[j] += w[i * k + j] * g[i];
  }
  memcpy(y, partial, k * sizeof(T));
  for (int t = 1; t < used; t++)
    for (int64_t j = 0; j < k; j++) y[j] += partial[t * padded + j];
  free(partial);
  return 0;
}

extern "C" {
void jb_weight_times_vector_f32(const float* w, const float* x, float* y, int64_t n, int64_t k) {
  weight_times_vector<float, 8>(w, x, y, n, k);
}
void jb_weight_times_vector_f64(const double* w, const double* x, double* y, int64_t n, int64_t k) {
  weight_times_vector<double, 8>(w, x, y, n, k);
}
int jb_vector_times_weight_f32(const float* w, const float* g, float* y, int64_t n, int64_t k) {
  return weight_rows_times_vector<float>(w, g, y, n, k);
}
int jb_vector_times_weight_f64(const double* w, const double* g, double* y, int64_t n, int64_t k) {
  return weight_rows_times_vector<double>(w, g, y, n, k);
}
}
