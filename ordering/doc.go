// Package ordering holds the two mechanisms that let a consumer work in
// parallel without breaking order or losing messages:
//
//   - [Tracker] follows the offsets of one partition and tells which offset is
//     safe to commit: the lowest one whose message is not complete yet. A
//     message that finished early never lets the commit skip an earlier one
//     still running (L05).
//   - [Lanes] spreads deliveries over worker lanes by key: different keys run
//     in parallel, one key strictly in sequence (L08, L12).
package ordering
