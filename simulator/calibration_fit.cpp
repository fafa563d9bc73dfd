// The calibration fit: robust Levenberg-Marquardt over the registry's parameters, with the
// simulator as a black box (central-difference Jacobian), and the standard errors from the
// Jacobian at the solution.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <ctime>
#include <limits>

#include "core/error.hpp"
#include "simulator/calibration.hpp"
#include "simulator/simulator.hpp"

namespace moetune::simulator {

namespace {

using Matrix = std::vector<std::vector<double>>;  // [row][column]

std::string utc_now() {
  const std::time_t now = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
  std::tm tm{};
  gmtime_r(&now, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

// Eigen-decomposition of a symmetric matrix by cyclic Jacobi rotations: a = v diag(w) v^T. The
// fits have at most a dozen parameters, where this is exact enough and short.
void symmetric_eigen(Matrix a, std::vector<double>& w, Matrix& v) {
  const std::size_t n = a.size();
  v.assign(n, std::vector<double>(n, 0.0));
  for (std::size_t i = 0; i < n; ++i)
    v[i][i] = 1.0;
  for (int sweep = 0; sweep < 100; ++sweep) {
    double off = 0;
    for (std::size_t p = 0; p < n; ++p)
      for (std::size_t q = p + 1; q < n; ++q)
        off += a[p][q] * a[p][q];
    if (off < 1e-30) break;
    for (std::size_t p = 0; p < n; ++p) {
      for (std::size_t q = p + 1; q < n; ++q) {
        if (std::abs(a[p][q]) < 1e-300) continue;
        const double theta = (a[q][q] - a[p][p]) / (2.0 * a[p][q]);
        const double t =
            (theta >= 0 ? 1.0 : -1.0) / (std::abs(theta) + std::sqrt(theta * theta + 1.0));
        const double c = 1.0 / std::sqrt(t * t + 1.0), s = t * c;
        for (std::size_t k = 0; k < n; ++k) {
          const double akp = a[k][p], akq = a[k][q];
          a[k][p] = c * akp - s * akq;
          a[k][q] = s * akp + c * akq;
        }
        for (std::size_t k = 0; k < n; ++k) {
          const double apk = a[p][k], aqk = a[q][k];
          a[p][k] = c * apk - s * aqk;
          a[q][k] = s * apk + c * aqk;
        }
        for (std::size_t k = 0; k < n; ++k) {
          const double vkp = v[k][p], vkq = v[k][q];
          v[k][p] = c * vkp - s * vkq;
          v[k][q] = s * vkp + c * vkq;
        }
      }
    }
  }
  w.resize(n);
  for (std::size_t i = 0; i < n; ++i)
    w[i] = a[i][i];
}

// Moore-Penrose inverse of a symmetric positive semi-definite matrix; eigenvalues below
// 1e-12 of the largest count as zero (directions the data cannot see).
Matrix pseudo_inverse(const Matrix& a) {
  std::vector<double> w;
  Matrix v;
  symmetric_eigen(a, w, v);
  const std::size_t n = a.size();
  double largest = 0;
  for (double x : w)
    largest = std::max(largest, std::abs(x));
  Matrix out(n, std::vector<double>(n, 0.0));
  for (std::size_t k = 0; k < n; ++k) {
    if (w[k] <= largest * 1e-12) continue;
    for (std::size_t i = 0; i < n; ++i)
      for (std::size_t j = 0; j < n; ++j)
        out[i][j] += v[i][k] * v[j][k] / w[k];
  }
  return out;
}

double huber(double r, double delta) {
  const double a = std::abs(r);
  return a <= delta ? 0.5 * r * r : delta * (a - 0.5 * delta);
}

double huber_weight(double r, double delta) {
  const double a = std::abs(r);
  return a <= delta ? 1.0 : delta / a;
}

// Which residuals a run contributes: its step time, then each phase measured and predicted.
struct ResidualSpec {
  std::size_t run = 0;
  std::string phase;  // empty: the step time
  double measured = 0;
  double weight = 1;  // sqrt of the residual's weight
};

class Problem {
 public:
  Problem(const ClusterSpec& base, const std::vector<Measurement>& runs,
          std::vector<const CalibrationParameter*> params, const FitOptions& options)
      : base_(base), runs_(runs), params_(std::move(params)), options_(options) {
    const std::vector<Prediction> first = predictions(base_);
    for (std::size_t i = 0; i < runs_.size(); ++i) {
      specs_.push_back({i, "", runs_[i].step_time_s, 1.0});
      if (options_.phase_weight <= 0) continue;
      for (const std::string& phase : compared_phases()) {
        const auto it = runs_[i].phases_s.find(phase);
        if (it == runs_[i].phases_s.end() || it->second <= 0) continue;
        if (phase_seconds(first[i].time, phase).value_or(0.0) <= 0) continue;
        specs_.push_back({i, phase, it->second, std::sqrt(options_.phase_weight)});
      }
    }
  }

  std::size_t size() const { return specs_.size(); }
  const std::vector<const CalibrationParameter*>& params() const { return params_; }

  double to_x(std::size_t j, double value) const {
    return params_[j]->log_space ? std::log(value) : value;
  }
  double to_value(std::size_t j, double x) const { return params_[j]->log_space ? std::exp(x) : x; }
  double lower_x(std::size_t j) const { return to_x(j, params_[j]->lower); }
  double upper_x(std::size_t j) const { return to_x(j, params_[j]->upper); }

  ClusterSpec profile_at(const std::vector<double>& x) const {
    ClusterSpec c = base_;
    for (std::size_t j = 0; j < params_.size(); ++j)
      params_[j]->set(c, to_value(j, x[j]));
    return c;
  }

  std::vector<double> residuals(const std::vector<double>& x) const {
    const std::vector<Prediction> p = predictions(profile_at(x));
    std::vector<double> r(specs_.size());
    for (std::size_t i = 0; i < specs_.size(); ++i) {
      const ResidualSpec& s = specs_[i];
      const double predicted = s.phase.empty()
                                   ? p[s.run].step_time_s
                                   : phase_seconds(p[s.run].time, s.phase).value_or(0.0);
      r[i] = s.weight * std::log(std::max(predicted, 1e-15) / s.measured);
    }
    return r;
  }

  double cost(const std::vector<double>& r) const {
    double c = 0;
    for (double v : r)
      c += huber(v, options_.huber_delta);
    return c;
  }

  // J[i][j] = d r_i / d x_j by central differences.
  Matrix jacobian(const std::vector<double>& x) const {
    constexpr double kStep = 1e-4;
    Matrix J(specs_.size(), std::vector<double>(params_.size(), 0.0));
    for (std::size_t j = 0; j < params_.size(); ++j) {
      const double h = params_[j]->log_space ? kStep : kStep * std::max(std::abs(x[j]), 1e-3);
      std::vector<double> up = x, down = x;
      up[j] += h;
      down[j] -= h;
      const std::vector<double> ru = residuals(up), rd = residuals(down);
      for (std::size_t i = 0; i < specs_.size(); ++i)
        J[i][j] = (ru[i] - rd[i]) / (2.0 * h);
    }
    return J;
  }

 private:
  std::vector<Prediction> predictions(const ClusterSpec& profile) const {
    std::vector<Prediction> out;
    out.reserve(runs_.size());
    for (const Measurement& m : runs_)
      out.push_back(predict_run(profile, m));
    return out;
  }

  ClusterSpec base_;
  const std::vector<Measurement>& runs_;
  std::vector<const CalibrationParameter*> params_;
  FitOptions options_;
  std::vector<ResidualSpec> specs_;
};

// Normal equations of the reweighted problem: A = J^T W J, g = J^T W r.
void normal_equations(const Matrix& J, const std::vector<double>& r, double delta, Matrix& A,
                      std::vector<double>& g) {
  const std::size_t n = J.empty() ? 0 : J[0].size();
  A.assign(n, std::vector<double>(n, 0.0));
  g.assign(n, 0.0);
  for (std::size_t i = 0; i < J.size(); ++i) {
    const double w = huber_weight(r[i], delta);
    for (std::size_t a = 0; a < n; ++a) {
      g[a] += w * J[i][a] * r[i];
      for (std::size_t b = 0; b < n; ++b)
        A[a][b] += w * J[i][a] * J[i][b];
    }
  }
}

std::optional<double> pooled_skew(const std::vector<Measurement>& runs, double* stderr_value) {
  double sum_sq = 0, var_sum = 0, samples = 0;
  for (const Measurement& m : runs) {
    if (!m.expert_skew) continue;
    const double n = static_cast<double>(m.expert_skew_samples);
    sum_sq += n * *m.expert_skew * *m.expert_skew;
    // stderr of the run's CV^2, from that of its CV
    const double se_sq = 2.0 * *m.expert_skew * m.expert_skew_stderr;
    var_sum += n * n * se_sq * se_sq;
    samples += n;
  }
  if (samples == 0) return std::nullopt;
  const double mean_sq = sum_sq / samples;
  const double skew = std::sqrt(mean_sq);
  const double se_mean_sq = std::sqrt(var_sum) / samples;
  *stderr_value = skew > 0 ? se_mean_sq / (2.0 * skew) : 0.0;
  return skew;
}

}  // namespace

FitResult calibrate(const ClusterSpec& base_in, const std::vector<Measurement>& runs,
                    const FitOptions& options) {
  if (runs.empty()) throw InputError("calibration needs at least one run");
  for (const Measurement& m : runs) {
    if (!(m.step_time_s > 0)) throw InputError(m.source + ": step time is not positive");
  }
  FitResult result;
  ClusterSpec base = base_in;
  CalibrationRecord record;
  if (options.fit_expert_skew) {
    result.expert_skew = pooled_skew(runs, &result.expert_skew_stderr);
    record.expert_skew = result.expert_skew;
  } else if (base.calibration) {
    record.expert_skew = base.calibration->expert_skew;
  }
  // The skew is measured, not fitted: predictions during the fit already use it.
  base.calibration = record;

  // Candidates: the named parameters, else the whole registry.
  std::vector<const CalibrationParameter*> candidates;
  if (options.parameters.empty()) {
    for (const CalibrationParameter& p : calibration_parameters())
      candidates.push_back(&p);
  } else {
    for (const std::string& name : options.parameters)
      candidates.push_back(&calibration_parameter(name));
  }
  // Start inside the bounds.
  for (const CalibrationParameter* p : candidates)
    p->set(base, std::clamp(p->get(base), p->lower, p->upper));

  // Parameters these runs do not depend on (the network of a one-node cluster, say) are left as
  // they are; a fit over them would only add flat directions.
  std::vector<const CalibrationParameter*> fitted;
  {
    Problem probe(base, runs, candidates, options);
    std::vector<double> x0;
    for (std::size_t j = 0; j < candidates.size(); ++j)
      x0.push_back(probe.to_x(j, candidates[j]->get(base)));
    const Matrix J = probe.jacobian(x0);
    for (std::size_t j = 0; j < candidates.size(); ++j) {
      double norm = 0;
      for (const auto& row : J)
        norm += row[j] * row[j];
      FittedParameter fp;
      fp.name = candidates[j]->name;
      fp.unit = candidates[j]->unit;
      fp.initial = fp.value = candidates[j]->get(base);
      fp.identified = std::sqrt(norm) > 1e-6;
      if (candidates[j]->varies_with) {
        const double first = candidates[j]->varies_with(runs.front());
        fp.identified =
            fp.identified && std::any_of(runs.begin(), runs.end(), [&](const Measurement& m) {
              return candidates[j]->varies_with(m) != first;
            });
      }
      fp.stderr_value = std::numeric_limits<double>::quiet_NaN();
      result.parameters.push_back(fp);
      if (fp.identified) fitted.push_back(candidates[j]);
    }
  }

  Problem problem(base, runs, fitted, options);
  const std::size_t n = fitted.size();
  std::vector<double> x(n);
  for (std::size_t j = 0; j < n; ++j)
    x[j] = problem.to_x(j, fitted[j]->get(base));
  std::vector<double> r = problem.residuals(x);
  double cost = problem.cost(r);
  result.cost_before = cost;
  result.residuals = static_cast<std::int64_t>(r.size());
  double lambda = 1e-3;
  Matrix A;
  std::vector<double> g;
  for (int it = 0; it < options.max_iterations && n > 0; ++it) {
    result.iterations = it + 1;
    const Matrix J = problem.jacobian(x);
    normal_equations(J, r, options.huber_delta, A, g);
    bool accepted = false;
    double decrease = 0;
    while (lambda < 1e10) {
      Matrix damped = A;
      for (std::size_t j = 0; j < n; ++j)
        damped[j][j] += lambda * std::max(A[j][j], 1e-12);
      const Matrix inv = pseudo_inverse(damped);
      std::vector<double> trial = x;
      for (std::size_t a = 0; a < n; ++a) {
        double step = 0;
        for (std::size_t b = 0; b < n; ++b)
          step -= inv[a][b] * g[b];
        trial[a] = std::clamp(x[a] + step, problem.lower_x(a), problem.upper_x(a));
      }
      const std::vector<double> tr = problem.residuals(trial);
      const double tc = problem.cost(tr);
      if (tc < cost) {
        decrease = cost - tc;
        x = trial;
        r = tr;
        cost = tc;
        lambda = std::max(lambda / 3.0, 1e-9);
        accepted = true;
        break;
      }
      lambda *= 4.0;
    }
    if (!accepted || decrease < 1e-12 * std::max(cost, 1e-12)) {
      result.converged = true;
      break;
    }
  }
  if (n == 0) result.converged = true;
  result.cost_after = cost;

  // Standard errors: cov(x) = sigma^2 (J^T W J)^+ with sigma^2 the reweighted residual variance.
  if (n > 0) {
    const Matrix J = problem.jacobian(x);
    normal_equations(J, r, options.huber_delta, A, g);
    const Matrix cov = pseudo_inverse(A);
    const double dof = static_cast<double>(r.size()) - static_cast<double>(n);
    double ss = 0;
    for (double v : r)
      ss += huber_weight(v, options.huber_delta) * v * v;
    const double sigma2 = dof > 0 ? ss / dof : std::numeric_limits<double>::quiet_NaN();
    for (std::size_t j = 0; j < n; ++j) {
      const double value = problem.to_value(j, x[j]);
      const double se_x = std::sqrt(std::max(0.0, cov[j][j] * sigma2));
      for (FittedParameter& fp : result.parameters) {
        if (fp.name != fitted[j]->name) continue;
        fp.value = value;
        fp.stderr_value = fitted[j]->log_space ? value * se_x : se_x;
        fp.at_bound = x[j] <= problem.lower_x(j) + 1e-9 || x[j] >= problem.upper_x(j) - 1e-9;
      }
    }
  }

  result.profile = problem.profile_at(x);
  record.date = utc_now();
  for (const Measurement& m : runs)
    record.runs.push_back(m.source);  // as given: several runs may share a file name
  for (const FittedParameter& fp : result.parameters) {
    if (!fp.identified) continue;
    std::optional<double> se;
    if (std::isfinite(fp.stderr_value)) se = fp.stderr_value;
    record.parameters.push_back({fp.name, fp.value, se});
  }
  record.step_time_error_before = median_step_time_error(base, runs);
  result.profile.calibration = record;
  record.step_time_error_after = median_step_time_error(result.profile, runs);
  result.profile.calibration = record;
  return result;
}

}  // namespace moetune::simulator
