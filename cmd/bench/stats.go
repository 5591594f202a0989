package main

import (
	"math"
	"slices"
)

// Latency is the publish-to-deliver latency in milliseconds.
type Latency struct {
	P50  float64 `json:"p50"`
	P90  float64 `json:"p90"`
	P99  float64 `json:"p99"`
	P999 float64 `json:"p999"`
	Max  float64 `json:"max"`
}

// percentile returns the nearest-rank q-quantile (0 < q <= 1) of sorted:
// the smallest sample such that at least q of all samples are <= it.
// It returns 0 for no samples.
func percentile(sorted []int64, q float64) int64 {
	n := len(sorted)
	if n == 0 {
		return 0
	}
	r := int(math.Ceil(q*float64(n))) - 1
	r = max(0, min(r, n-1))
	return sorted[r]
}

// latencyOf sorts samples (nanoseconds) in place and summarises them.
func latencyOf(samples []int64) Latency {
	slices.Sort(samples)
	ms := func(ns int64) float64 { return float64(ns) / 1e6 }
	var l Latency
	if len(samples) == 0 {
		return l
	}
	l.P50 = ms(percentile(samples, 0.50))
	l.P90 = ms(percentile(samples, 0.90))
	l.P99 = ms(percentile(samples, 0.99))
	l.P999 = ms(percentile(samples, 0.999))
	l.Max = ms(samples[len(samples)-1])
	return l
}
