// Package bayeuxtest holds test helpers shared by the broker's packages:
// a raw long-polling peer over real HTTP and a polling helper. It is only
// imported from tests.
package bayeuxtest
