// Table models of valid and rejected layouts.
#include "gui/layout_table_model.hpp"

#include <QColor>
#include <QRegularExpression>

#include <algorithm>

#include "core/units.hpp"

namespace moetune::gui {

namespace {

QString offload_text(const Layout& l) {
  QString text = l.optimizer_offload ? QStringLiteral("opt") : QStringLiteral("-");
  if (l.activation_offload) text += QStringLiteral("+act");
  return text;
}

// As `moetune plan` prints it: "8x2" with virtual stages, "~" for uneven first and last stages.
QString pp_text(const Layout& l) {
  QString text = l.vpp > 1 ? QStringLiteral("%1x%2").arg(l.pp).arg(l.vpp) : QString::number(l.pp);
  if (l.uneven_stages()) text += QLatin1Char('~');
  return text;
}

}  // namespace

CandidateTableModel::CandidateTableModel(QObject* parent) : QAbstractTableModel(parent) {}

void CandidateTableModel::setCandidates(std::vector<planner::Candidate> candidates) {
  beginResetModel();
  candidates_ = std::move(candidates);
  endResetModel();
}

int CandidateTableModel::rowCount(const QModelIndex& parent) const {
  return parent.isValid() ? 0 : static_cast<int>(candidates_.size());
}

int CandidateTableModel::columnCount(const QModelIndex& parent) const {
  return parent.isValid() ? 0 : ColumnCount;
}

QVariant CandidateTableModel::data(const QModelIndex& index, int role) const {
  if (!checkIndex(index, CheckIndexOption::IndexIsValid | CheckIndexOption::ParentIsInvalid)) {
    return {};
  }
  const planner::Candidate& c = candidates_[static_cast<std::size_t>(index.row())];
  const Layout& l = c.layout;
  if (role == Qt::TextAlignmentRole) {
    const bool text_column =
        index.column() == Order || index.column() == Recompute || index.column() == Offload;
    return QVariant::fromValue(text_column ? Qt::AlignLeft | Qt::AlignVCenter
                                           : Qt::AlignRight | Qt::AlignVCenter);
  }
  if (role == Qt::ForegroundRole && !c.fits) return QVariant::fromValue(QColor(150, 40, 40));
  if (role == Qt::ToolTipRole) {
    return QString::fromStdString(describe(l)) +
           (c.fits ? QString() : QStringLiteral("\ndoes not fit in device memory"));
  }
  if (role != Qt::DisplayRole && role != kSortRole) return {};
  const bool sort = role == kSortRole;
  switch (index.column()) {
    case Rank:
      return index.row() + 1;
    case Tp:
      return static_cast<qlonglong>(l.tp);
    case Pp:
      return sort ? QVariant(static_cast<qlonglong>(l.pp * 1000 + l.vpp)) : pp_text(l);
    case Ep:
      return static_cast<qlonglong>(l.ep);
    case Hs:
      return static_cast<qlonglong>(l.hs);
    case Rep:
      return static_cast<qlonglong>(l.rep);
    case Order:
      return QString::fromStdString(order_to_string(canonical_order(l)));
    case MicroBatch:
      return static_cast<qlonglong>(l.micro_batch);
    case Recompute:
      return QString::fromStdString(to_string(l.recompute));
    case Offload:
      return offload_text(l);
    case Fits:
      return sort ? QVariant(c.fits ? 1 : 0) : QVariant(c.fits ? "yes" : "no");
    case PeakMemory:
      return sort ? QVariant(c.peak_memory_bytes)
                  : QVariant(QString::number(c.peak_memory_bytes / kGiB, 'f', 1));
    case StepTime:
      return sort ? QVariant(c.step_time_s) : QVariant(QString::number(c.step_time_s, 'f', 3));
    case TokensPerS:
      return sort ? QVariant(c.tokens_per_s) : QVariant(QString::number(c.tokens_per_s, 'f', 0));
    case Mfu:
      return sort ? QVariant(c.mfu) : QVariant(QString::number(100.0 * c.mfu, 'f', 1));
    case CostPerBtok:
      return sort ? QVariant(c.cost_per_billion_tokens_usd)
                  : QVariant(QString::number(c.cost_per_billion_tokens_usd, 'f', 0));
    case Pareto:
      return sort ? QVariant(c.pareto ? 1 : 0) : QVariant(c.pareto ? "*" : "");
    default:
      return {};
  }
}

std::optional<double> CandidateTableModel::sortKey(int row, int column) const {
  const planner::Candidate& c = candidates_[static_cast<std::size_t>(row)];
  const Layout& l = c.layout;
  switch (column) {
    case Rank:
      return row;
    case Tp:
      return static_cast<double>(l.tp);
    case Pp:
      return static_cast<double>(l.pp * 1000 + l.vpp);
    case Ep:
      return static_cast<double>(l.ep);
    case Hs:
      return static_cast<double>(l.hs);
    case Rep:
      return static_cast<double>(l.rep);
    case MicroBatch:
      return static_cast<double>(l.micro_batch);
    case Fits:
      return c.fits ? 1 : 0;
    case PeakMemory:
      return c.peak_memory_bytes;
    case StepTime:
      return c.step_time_s;
    case TokensPerS:
      return c.tokens_per_s;
    case Mfu:
      return c.mfu;
    case CostPerBtok:
      return c.cost_per_billion_tokens_usd;
    case Pareto:
      return c.pareto ? 1 : 0;
    default:
      return std::nullopt;
  }
}

QVariant CandidateTableModel::headerData(int section, Qt::Orientation orientation, int role) const {
  if (role != Qt::DisplayRole) return {};
  if (orientation == Qt::Vertical) return section + 1;
  static const char* const names[ColumnCount] = {
      "#",       "tp",   "pp",  "ep",     "hs",       "rep",   "order",  "mb",    "recomp",
      "offload", "fits", "GiB", "step s", "tokens/s", "MFU %", "$/Btok", "Pareto"};
  return section >= 0 && section < ColumnCount ? QVariant(names[section]) : QVariant();
}

LayoutFilterProxy::LayoutFilterProxy(QObject* parent) : QSortFilterProxyModel(parent) {
  setSortRole(kSortRole);
}

void LayoutFilterProxy::setFitsOnly(bool on) {
  fits_only_ = on;
  invalidateFilter();
}

void LayoutFilterProxy::setParetoOnly(bool on) {
  pareto_only_ = on;
  invalidateFilter();
}

void LayoutFilterProxy::setWords(const QString& text) {
  words_ = text.split(QLatin1Char(' '), Qt::SkipEmptyParts);
  invalidateFilter();
}

bool LayoutFilterProxy::filterAcceptsRow(int source_row, const QModelIndex& source_parent) const {
  const auto* model = qobject_cast<const CandidateTableModel*>(sourceModel());
  if (model == nullptr || source_parent.isValid()) return true;
  const planner::Candidate& c = model->candidate(source_row);
  if (fits_only_ && !c.fits) return false;
  if (pareto_only_ && !c.pareto) return false;
  if (words_.isEmpty()) return true;
  const QString text = QString::fromStdString(describe(c.layout)) + QLatin1Char(' ') +
                       QString::fromStdString(to_string(c.layout.recompute)) +
                       (c.layout.optimizer_offload ? QStringLiteral(" opt") : QString());
  static const QRegularExpression separators(QStringLiteral("[\\s\\[\\]]+"));
  const QStringList tokens = text.split(separators, Qt::SkipEmptyParts);
  // "ep2" is a whole token (not part of "rep2", nor a prefix of "ep16"); "ep" or "tp,ep" match
  // the start of a token.
  for (const QString& w : words_) {
    const bool whole = w.back().isDigit();
    const bool hit = std::any_of(tokens.begin(), tokens.end(), [&](const QString& t) {
      return whole ? t.compare(w, Qt::CaseInsensitive) == 0 : t.startsWith(w, Qt::CaseInsensitive);
    });
    if (!hit) return false;
  }
  return true;
}

bool LayoutFilterProxy::lessThan(const QModelIndex& left, const QModelIndex& right) const {
  const auto* model = qobject_cast<const CandidateTableModel*>(sourceModel());
  if (model != nullptr && left.column() == right.column()) {
    const auto a = model->sortKey(left.row(), left.column());
    const auto b = model->sortKey(right.row(), right.column());
    if (a && b) return *a < *b;
  }
  return QSortFilterProxyModel::lessThan(left, right);
}

RejectedTableModel::RejectedTableModel(QObject* parent) : QAbstractTableModel(parent) {}

void RejectedTableModel::setRejected(const Setup& setup,
                                     std::vector<planner::RejectedLayout> rejected) {
  beginResetModel();
  setup_ = setup;
  rejected_ = std::move(rejected);
  endResetModel();
}

int RejectedTableModel::rowCount(const QModelIndex& parent) const {
  return parent.isValid() ? 0 : static_cast<int>(rejected_.size());
}

int RejectedTableModel::columnCount(const QModelIndex& parent) const {
  return parent.isValid() ? 0 : ColumnCount;
}

QVariant RejectedTableModel::data(const QModelIndex& index, int role) const {
  if (!checkIndex(index, CheckIndexOption::IndexIsValid | CheckIndexOption::ParentIsInvalid)) {
    return {};
  }
  if (role != Qt::DisplayRole && role != kSortRole && role != Qt::ToolTipRole) return {};
  const planner::RejectedLayout& r = rejected_[static_cast<std::size_t>(index.row())];
  const Layout& l = r.layout;
  switch (index.column()) {
    case Tp:
      return static_cast<qlonglong>(l.tp);
    case Pp:
      return static_cast<qlonglong>(l.pp);
    case Vpp:
      return static_cast<qlonglong>(l.vpp);
    case Ep:
      return static_cast<qlonglong>(l.ep);
    case Hs:
      return static_cast<qlonglong>(l.hs);
    case Rep:
      return static_cast<qlonglong>(l.rep);
    case MicroBatch:
      return static_cast<qlonglong>(l.micro_batch);
    case Rule:
      return QString::fromStdString(to_string(r.rejection.code));
    case Reason:
      return QString::fromStdString(
          explain(r.rejection, setup_->model, setup_->cluster, setup_->train, l));
    default:
      return {};
  }
}

QVariant RejectedTableModel::headerData(int section, Qt::Orientation orientation, int role) const {
  if (role != Qt::DisplayRole) return {};
  if (orientation == Qt::Vertical) return section + 1;
  static const char* const names[ColumnCount] = {"tp",  "pp", "vpp",  "ep",    "hs",
                                                 "rep", "mb", "rule", "reason"};
  return section >= 0 && section < ColumnCount ? QVariant(names[section]) : QVariant();
}

}  // namespace moetune::gui
