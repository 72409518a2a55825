//! The evaluation harness: labelled scenarios from real data, an offline replay of the daemon's
//! pipeline, and the scores of its alerts against the labels.
//!
//! | command | module |
//! |---|---|
//! | `gridwatch scenario` | [`scenario`]: adds known anomalies to a real data set and writes labels; `bypass.rs` adds transformer meters and bypasses |
//! | `gridwatch replay` | [`replay`]: runs decode, state, plugins, rules and the alert store offline |
//! | `gridwatch replay --candidate-rules` | [`backtest`]: compares a candidate rule set's alerts with the current ones |
//! | `gridwatch score` | [`score`]: precision, recall, F1, PR-AUC, time to detect, false alerts |

pub mod backtest;
mod bypass;
pub mod replay;
pub mod scenario;
pub mod score;

#[cfg(test)]
mod tests;
