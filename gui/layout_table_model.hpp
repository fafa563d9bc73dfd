// Table models over the planner's results: every valid layout with its figures (sortable through
// a proxy that also filters), and the rejected layouts with the rule each breaks.
#pragma once

#include <QAbstractTableModel>
#include <QSortFilterProxyModel>
#include <QStringList>

#include <vector>

#include "gui/session.hpp"

namespace moetune::gui {

// Role under which every cell gives a value that sorts right (numbers as numbers).
inline constexpr int kSortRole = Qt::UserRole + 1;

class CandidateTableModel : public QAbstractTableModel {
  Q_OBJECT

 public:
  enum Column {
    Rank,
    Tp,
    Pp,
    Ep,
    Hs,
    Rep,
    Order,
    MicroBatch,
    Recompute,
    Offload,
    Fits,
    PeakMemory,
    StepTime,
    TokensPerS,
    Mfu,
    CostPerBtok,
    Pareto,
    ColumnCount
  };

  explicit CandidateTableModel(QObject* parent = nullptr);

  void setCandidates(std::vector<planner::Candidate> candidates);
  const std::vector<planner::Candidate>& candidates() const { return candidates_; }
  const planner::Candidate& candidate(int row) const { return candidates_.at(row); }
  // The value a column sorts by (what kSortRole gives), without going through QVariant: sorting
  // hundreds of thousands of rows calls this millions of times. Text columns give nothing.
  std::optional<double> sortKey(int row, int column) const;

  int rowCount(const QModelIndex& parent = {}) const override;
  int columnCount(const QModelIndex& parent = {}) const override;
  QVariant data(const QModelIndex& index, int role = Qt::DisplayRole) const override;
  QVariant headerData(int section, Qt::Orientation orientation,
                      int role = Qt::DisplayRole) const override;

 private:
  std::vector<planner::Candidate> candidates_;
};

// Sorting by kSortRole; filtering by "fits only", "Pareto only" and words that must all appear in
// the layout's description ("ep4 hs8", "full", "opt").
class LayoutFilterProxy : public QSortFilterProxyModel {
  Q_OBJECT

 public:
  explicit LayoutFilterProxy(QObject* parent = nullptr);
  void setFitsOnly(bool on);
  void setParetoOnly(bool on);
  void setWords(const QString& text);

 protected:
  bool filterAcceptsRow(int source_row, const QModelIndex& source_parent) const override;
  bool lessThan(const QModelIndex& left, const QModelIndex& right) const override;

 private:
  bool fits_only_ = false;
  bool pareto_only_ = false;
  QStringList words_;
};

class RejectedTableModel : public QAbstractTableModel {
  Q_OBJECT

 public:
  enum Column { Tp, Pp, Vpp, Ep, Hs, Rep, MicroBatch, Rule, Reason, ColumnCount };

  explicit RejectedTableModel(QObject* parent = nullptr);
  // `setup` explains the rejections (the sentence is written only for shown rows).
  void setRejected(const Setup& setup, std::vector<planner::RejectedLayout> rejected);

  int rowCount(const QModelIndex& parent = {}) const override;
  int columnCount(const QModelIndex& parent = {}) const override;
  QVariant data(const QModelIndex& index, int role = Qt::DisplayRole) const override;
  QVariant headerData(int section, Qt::Orientation orientation,
                      int role = Qt::DisplayRole) const override;

 private:
  std::optional<Setup> setup_;
  std::vector<planner::RejectedLayout> rejected_;
};

}  // namespace moetune::gui
