// SNAP bispectrum of grid points on one CPU core, vectorised across grid points (the CPU kernel of the
// torch descriptor backend; see sna_cpu.py, which builds this file and holds the Python side).
//
// Same conventions and arithmetic as torch_sna.py (the reference formulation, also used on CUDA and for
// forces): doubled labels j = 2J, U^j[mb, ma] row major from u_offset[j], Cayley-Klein parameters
// conj(a) = (z0 + i dz) / r0, conj(b) = (dy + i dx) / r0, the Wigner-U recursion on rows 2 mb <= j,
// the other rows by U^j[j - mb, j - ma] = (-1)^(ma + mb) conj(U^j[mb, ma]), Z and B from the term tables
// that sna_tables() builds in Python (Clebsch-Gordan products, sorted by Z entry).
//
// Layout: grid points are processed in blocks of W ("lanes", one SIMD register); every per-point
// quantity is stored as [index][re/im][W], so each arithmetic step is one SIMD instruction. A block's
// U_tot (n_u x 2 x W) stays in L2 and the few U blocks that one (j1, j2, j) triple reads stay in L1.
// Lanes with fewer neighbours than the block's largest count are padded with a neutral neighbour
// (weight 0, a = 1, b = 0).
//
// The file is compiled once per instruction-set level (SNA_NS names the namespace; see sna_cpu.py);
// the part under SNA_DISPATCH (compiled once, baseline ISA) holds the plan and picks the best level
// the CPU supports at run time.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

namespace sna_common {

struct Plan {
  int twojmax = 0, n_u = 0, n_linear = 0;
  double rcut = 0, rmin0 = 0, rfac0 = 0, wj = 1;
  int switchflag = 1;
  std::vector<int32_t> u_offset;                    // (twojmax + 1)
  std::vector<int32_t> term_start;                  // (n_entries + 1): terms of entry e
  std::vector<int32_t> left, right;                 // (n_terms): flat U indices of the two factors
  std::vector<double> weight;                       // (n_terms): product of the Clebsch-Gordan pair
  std::vector<float> weight_f;
  std::vector<int32_t> entry_u, entry_triple;       // (n_entries)
  std::vector<double> entry_weight;                 // (n_entries): 2, or 1 for an even block's centre
  std::vector<float> entry_weight_f;
  std::vector<int32_t> coeff_offset;                // (twojmax + 1): start of layer j's coefficients
  std::vector<double> ca, cb;                       // per layer, rows 0..j/2, columns 0..j
  std::vector<float> ca_f, cb_f;
};

struct Grid {  // atom images binned into cubes (torch_neighbors.CellList), read only
  const double* positions;                          // (m, 3), Angstrom, sorted by bin
  const int64_t* starts;                            // (n_bins): first image of each bin
  const int64_t* counts;                            // (n_bins): images in each bin
  int64_t n_bins[3];
  double origin[3], bin_size[3], cutoff;
};

template <typename T> inline const T* weights(const Plan& p);
template <> inline const double* weights<double>(const Plan& p) { return p.weight.data(); }
template <> inline const float* weights<float>(const Plan& p) { return p.weight_f.data(); }
template <typename T> inline const T* entry_weights(const Plan& p);
template <> inline const double* entry_weights<double>(const Plan& p) { return p.entry_weight.data(); }
template <> inline const float* entry_weights<float>(const Plan& p) { return p.entry_weight_f.data(); }
template <typename T> inline const T* coeff_a(const Plan& p);
template <> inline const double* coeff_a<double>(const Plan& p) { return p.ca.data(); }
template <> inline const float* coeff_a<float>(const Plan& p) { return p.ca_f.data(); }
template <typename T> inline const T* coeff_b(const Plan& p);
template <> inline const double* coeff_b<double>(const Plan& p) { return p.cb.data(); }
template <> inline const float* coeff_b<float>(const Plan& p) { return p.cb_f.data(); }

}  // namespace sna_common

#ifdef SNA_NS
namespace SNA_NS {

using sna_common::Grid;
using sna_common::Plan;

// One SIMD register of lanes, one grid point each: SNA_VECTOR_BYTES is the register width of the level
// compiled for (64 with AVX-512: 8 float64 or 16 float32 points; 32 with AVX2; 16 for SSE2 or NEON).
// Wider generic vectors than the hardware's are split by the compiler into slow code, hence per level.
template <typename T> struct Lanes;
template <> struct Lanes<double> { typedef double V __attribute__((vector_size(SNA_VECTOR_BYTES))); };
template <> struct Lanes<float> { typedef float V __attribute__((vector_size(SNA_VECTOR_BYTES))); };

template <typename T> struct Cx {  // a complex number in every lane
  typename Lanes<T>::V r, i;
};

// U_tot of one block (the first `lanes` lanes are grid points, the others padding): utot[n_u].
// delta[l]: lane l's neighbours (x, y, z of grid point minus atom, Angstrom, 0 < r < rcut);
// `u` is work space (n_u) for the U blocks of the current neighbour of every lane.
template <typename T>
static void block_u(const Plan& P, const std::vector<T>* delta, int lanes, Cx<T>* utot, Cx<T>* u) {
  typedef typename Lanes<T>::V V;
  constexpr int W = sizeof(V) / sizeof(T);
  const int J = P.twojmax;
  const int32_t* off = P.u_offset.data();
  const T* CA = sna_common::coeff_a<T>(P);
  const T* CB = sna_common::coeff_b<T>(P);
  const V zero = {};
  for (int n = 0; n < P.n_u; ++n) utot[n].r = utot[n].i = zero;
  for (int j = 0; j <= J; ++j)  // the central point: identity in every block (rows 2 mb <= j)
    for (int mb = 0; 2 * mb <= j; ++mb) utot[off[j] + (j + 1) * mb + mb].r = zero + T(1);
  size_t kmax = 0;
  for (int l = 0; l < lanes; ++l) kmax = std::max(kmax, delta[l].size() / 3);
  const T theta_scale = T(P.rfac0 * M_PI / (P.rcut - P.rmin0));
  const T switch_scale = T(M_PI / (P.rcut - P.rmin0));
  const T rmin0 = T(P.rmin0), rcut = T(P.rcut), wj = T(P.wj);
  for (size_t k = 0; k < kmax; ++k) {
    alignas(64) T g[5][W];  // conj(a), conj(b) and weight of each lane's k-th neighbour
    for (int l = 0; l < W; ++l) {
      if (l < lanes && 3 * k < delta[l].size()) {
        const T* d = delta[l].data() + 3 * k;
        const T x = d[0], y = d[1], z = d[2];
        const T r = std::sqrt(x * x + y * y + z * z);
        const T theta0 = (r - rmin0) * theta_scale;
        const T z0 = r / std::tan(theta0);
        const T r0inv = T(1) / std::sqrt(r * r + z0 * z0);
        T s = T(1);
        if (P.switchflag) {
          s = T(0.5) * (std::cos((r - rmin0) * switch_scale) + T(1));
          if (r <= rmin0) s = T(1);
          if (r > rcut) s = T(0);
        }
        g[0][l] = z0 * r0inv;
        g[1][l] = z * r0inv;
        g[2][l] = y * r0inv;
        g[3][l] = x * r0inv;
        g[4][l] = s * wj;
      } else {  // padding: a neutral neighbour of weight 0
        g[0][l] = T(1);
        g[1][l] = g[2][l] = g[3][l] = g[4][l] = T(0);
      }
    }
    const V ar = *reinterpret_cast<const V*>(g[0]), ai = *reinterpret_cast<const V*>(g[1]);
    const V br = *reinterpret_cast<const V*>(g[2]), bi = *reinterpret_cast<const V*>(g[3]);
    const V sf = *reinterpret_cast<const V*>(g[4]);
    u[0].r = zero + T(1);
    u[0].i = zero;
    utot[0].r += sf;
    for (int j = 1; j <= J; ++j) {
      const int jp = j - 1;
      if (j % 2 == 0) {  // row j/2 of layer j - 1 from its mirror row j/2 - 1
        const int mb = j / 2;
        for (int ma = 0; ma <= jp; ++ma) {
          const Cx<T>& s = u[off[jp] + (jp + 1) * (jp - mb) + (jp - ma)];
          Cx<T>& t = u[off[jp] + (jp + 1) * mb + ma];
          const T sign = ((ma + mb) % 2 == 0) ? T(1) : T(-1);
          t.r = sign * s.r;
          t.i = -sign * s.i;
        }
      }
      const T* ca = CA + P.coeff_offset[j];
      const T* cb = CB + P.coeff_offset[j];
      for (int mb = 0; 2 * mb <= j; ++mb) {
        const Cx<T>* prev = u + off[jp] + (jp + 1) * mb;
        Cx<T>* cur = u + off[j] + (j + 1) * mb;
        Cx<T>* tot = utot + off[j] + (j + 1) * mb;
        for (int ma = 0; ma <= j; ++ma) {
          const T cam = ca[mb * (j + 1) + ma], cbm = cb[mb * (j + 1) + ma];
          V re = zero, im = zero;
          if (ma < j) {
            const Cx<T>& q = prev[ma];
            re = cam * (ar * q.r - ai * q.i);
            im = cam * (ar * q.i + ai * q.r);
          }
          if (ma > 0) {
            const Cx<T>& q = prev[ma - 1];
            re -= cbm * (br * q.r - bi * q.i);
            im -= cbm * (br * q.i + bi * q.r);
          }
          cur[ma].r = re;
          cur[ma].i = im;
          tot[ma].r += sf * re;
          tot[ma].i += sf * im;
        }
      }
    }
  }
  for (int j = 1; j <= J; ++j)  // rows 2 mb > j from their mirrors
    for (int mb = j / 2 + 1; mb <= j; ++mb)
      for (int ma = 0; ma <= j; ++ma) {
        const Cx<T>& s = utot[off[j] + (j + 1) * (j - mb) + (j - ma)];
        Cx<T>& t = utot[off[j] + (j + 1) * mb + ma];
        const T sign = ((ma + mb) % 2 == 0) ? T(1) : T(-1);
        t.r = sign * s.r;
        t.i = -sign * s.i;
      }
}

// B of one block from its U_tot: b[n_linear].
template <typename T>
static void block_b(const Plan& P, const Cx<T>* utot, typename Lanes<T>::V* b) {
  typedef typename Lanes<T>::V V;
  const T* weight = sna_common::weights<T>(P);
  const T* ew = sna_common::entry_weights<T>(P);
  const int32_t* ts = P.term_start.data();
  const int32_t* left = P.left.data();
  const int32_t* right = P.right.data();
  const int n_entries = (int)P.entry_u.size();
  const V zero = {};
  for (int t = 0; t < P.n_linear; ++t) b[t] = zero;
  for (int e = 0; e < n_entries; ++e) {
    V zr = zero, zi = zero;
    for (int32_t k = ts[e]; k < ts[e + 1]; ++k) {
      const T w = weight[k];
      const Cx<T>& x = utot[left[k]];
      const Cx<T>& y = utot[right[k]];
      zr += w * (x.r * y.r - x.i * y.i);
      zi += w * (x.r * y.i + x.i * y.r);
    }
    const Cx<T>& u = utot[P.entry_u[e]];
    b[P.entry_triple[e]] += ew[e] * (u.r * zr + u.i * zi);
  }
}

// Neighbours of one grid point x (Angstrom) from the binned atom images (CellList's arrays): delta
// (grid point minus image, converted to T) of the images with 1e-20 < r^2 < cutoff^2, in the order of
// the cell stencil and of the images within a cell (as CellList.pairs).
template <typename T>
static void neighbours(const Grid& G, const double* x, std::vector<T>& delta) {
  delta.clear();
  int64_t own[3];
  for (int a = 0; a < 3; ++a) {
    own[a] = (int64_t)std::floor((x[a] - G.origin[a]) / G.bin_size[a]);
    own[a] = std::min(std::max(own[a], int64_t(0)), G.n_bins[a] - 1);
  }
  const double cut2 = G.cutoff * G.cutoff;
  for (int dx = -1; dx <= 1; ++dx)
    for (int dy = -1; dy <= 1; ++dy)
      for (int dz = -1; dz <= 1; ++dz) {
        const int64_t b0 = own[0] + dx, b1 = own[1] + dy, b2 = own[2] + dz;
        if (b0 < 0 || b1 < 0 || b2 < 0 || b0 >= G.n_bins[0] || b1 >= G.n_bins[1] || b2 >= G.n_bins[2]) continue;
        const int64_t bin = (b0 * G.n_bins[1] + b1) * G.n_bins[2] + b2;
        for (int64_t i = G.starts[bin]; i < G.starts[bin] + G.counts[bin]; ++i) {
          const double* y = G.positions + 3 * i;
          const double d0 = x[0] - y[0], d1 = x[1] - y[1], d2 = x[2] - y[2];
          const double rsq = d0 * d0 + d1 * d1 + d2 * d2;
          if (rsq < cut2 && rsq > 1e-20) {
            delta.push_back(T(d0));
            delta.push_back(T(d1));
            delta.push_back(T(d2));
          }
        }
      }
}

template <typename T>
static void compute(const Plan& P, const Grid& G, const double* points, int64_t n_points, T* out) {
  typedef typename Lanes<T>::V V;
  constexpr int W = sizeof(V) / sizeof(T);
  std::vector<Cx<T>> utot(P.n_u), u(P.n_u);
  std::vector<V> b(P.n_linear);
  std::vector<T> delta[W];
  for (int64_t p0 = 0; p0 < n_points; p0 += W) {
    const int lanes = (int)std::min<int64_t>(W, n_points - p0);
    for (int l = 0; l < lanes; ++l) neighbours<T>(G, points + 3 * (p0 + l), delta[l]);
    block_u<T>(P, delta, lanes, utot.data(), u.data());
    block_b<T>(P, utot.data(), b.data());
    for (int l = 0; l < lanes; ++l)
      for (int t = 0; t < P.n_linear; ++t) out[(p0 + l) * P.n_linear + t] = b[t][l];
  }
}

void compute_f64(const Plan& P, const Grid& G, const double* points, int64_t n, double* out) {
  compute<double>(P, G, points, n, out);
}
void compute_f32(const Plan& P, const Grid& G, const double* points, int64_t n, float* out) {
  compute<float>(P, G, points, n, out);
}

}  // namespace SNA_NS
#endif  // SNA_NS

#ifdef SNA_DISPATCH
#define SNA_LEVEL(ns)                                                                                         \
  namespace ns {                                                                                              \
  void compute_f64(const sna_common::Plan&, const sna_common::Grid&, const double*, int64_t, double*);       \
  void compute_f32(const sna_common::Plan&, const sna_common::Grid&, const double*, int64_t, float*);        \
  }
SNA_LEVEL(sna_base)
#ifdef SNA_HAVE_V3
SNA_LEVEL(sna_v3)
#endif
#ifdef SNA_HAVE_V4
SNA_LEVEL(sna_v4)
#endif

namespace {
int detected_level() {  // 4: AVX-512 (x86-64-v4), 3: AVX2 + FMA (x86-64-v3), 0: baseline; among those built
#if defined(SNA_HAVE_V3) || defined(SNA_HAVE_V4)
  __builtin_cpu_init();
#endif
#ifdef SNA_HAVE_V4
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx2") &&
      __builtin_cpu_supports("fma"))
    return 4;
#endif
#ifdef SNA_HAVE_V3
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("bmi2")) return 3;
#endif
  return 0;
}
int level_cap = 4;  // sna_limit_level()
int level() {
  static const int detected = detected_level();
  return std::min(detected, level_cap);
}
}  // namespace

extern "C" {

const char* sna_source_hash() { return SNA_SOURCE_HASH; }

int sna_isa_level() { return level(); }

// Use no level above `cap` from now on (for tests of the lower levels); returns the level in use.
int sna_limit_level(int cap) {
  level_cap = cap;
  return level();
}

void* sna_plan_new(int twojmax, int n_linear, int n_u, const int32_t* u_offset, int64_t n_entries,
                   const int32_t* term_start, const int32_t* left, const int32_t* right, const double* weight,
                   const int32_t* entry_u, const int32_t* entry_triple, const double* entry_weight, double rcut,
                   double rmin0, double rfac0, double wj, int switchflag) {
  auto* P = new sna_common::Plan();
  P->twojmax = twojmax;
  P->n_linear = n_linear;
  P->n_u = n_u;
  P->rcut = rcut;
  P->rmin0 = rmin0;
  P->rfac0 = rfac0;
  P->wj = wj;
  P->switchflag = switchflag;
  P->u_offset.assign(u_offset, u_offset + twojmax + 1);
  P->term_start.assign(term_start, term_start + n_entries + 1);
  const int64_t n_terms = term_start[n_entries];
  P->left.assign(left, left + n_terms);
  P->right.assign(right, right + n_terms);
  P->weight.assign(weight, weight + n_terms);
  P->weight_f.assign(weight, weight + n_terms);
  P->entry_u.assign(entry_u, entry_u + n_entries);
  P->entry_triple.assign(entry_triple, entry_triple + n_entries);
  P->entry_weight.assign(entry_weight, entry_weight + n_entries);
  P->entry_weight_f.assign(entry_weight, entry_weight + n_entries);
  P->coeff_offset.assign(twojmax + 1, 0);
  for (int j = 1; j <= twojmax; ++j) {  // sqrt((j - ma) / (j - mb)) and sqrt(ma / (j - mb)), rows 2 mb <= j
    P->coeff_offset[j] = (int32_t)P->ca.size();
    for (int mb = 0; 2 * mb <= j; ++mb)
      for (int ma = 0; ma <= j; ++ma) {
        P->ca.push_back(std::sqrt(double(j - ma) / double(j - mb)));
        P->cb.push_back(std::sqrt(double(ma) / double(j - mb)));
      }
  }
  P->ca_f.assign(P->ca.begin(), P->ca.end());
  P->cb_f.assign(P->cb.begin(), P->cb.end());
  return P;
}

void sna_plan_free(void* plan) { delete static_cast<sna_common::Plan*>(plan); }

// Linear bispectrum (n_points x n_linear, row major) of grid points (n_points x 3, Angstrom), from the
// binned atom images: positions (m x 3, sorted by bin), starts and counts (per bin), n_bins (3),
// origin and bin_size (3, Angstrom), cutoff (Angstrom). double_precision: out is double, else float.
void sna_compute(const void* plan, const double* points, int64_t n_points, const double* positions,
                 const int64_t* starts, const int64_t* counts, const int64_t* n_bins, const double* origin,
                 const double* bin_size, double cutoff, int double_precision, void* out) {
  const auto& P = *static_cast<const sna_common::Plan*>(plan);
  sna_common::Grid G{positions, starts, counts, {n_bins[0], n_bins[1], n_bins[2]},
                     {origin[0], origin[1], origin[2]}, {bin_size[0], bin_size[1], bin_size[2]}, cutoff};
  const int lv = level();
  (void)lv;
  if (double_precision) {
    double* o = static_cast<double*>(out);
#ifdef SNA_HAVE_V4
    if (lv == 4) return sna_v4::compute_f64(P, G, points, n_points, o);
#endif
#ifdef SNA_HAVE_V3
    if (lv == 3) return sna_v3::compute_f64(P, G, points, n_points, o);
#endif
    return sna_base::compute_f64(P, G, points, n_points, o);
  }
  float* o = static_cast<float*>(out);
#ifdef SNA_HAVE_V4
  if (lv == 4) return sna_v4::compute_f32(P, G, points, n_points, o);
#endif
#ifdef SNA_HAVE_V3
  if (lv == 3) return sna_v3::compute_f32(P, G, points, n_points, o);
#endif
  sna_base::compute_f32(P, G, points, n_points, o);
}

}  // extern "C"
#endif  // SNA_DISPATCH
