//go:build race

package cpuratio

// RaceDetector is true in a build with the race detector, whose
// instrumentation costs more than most code it instruments and so says
// nothing about CPU ratios: the checks skip themselves there and run in
// scripts/test.sh's pass without it.
const RaceDetector = true
