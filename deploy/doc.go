// Package deploy holds no code: it checks the deployment files offline.
//
//   - docker-compose.yml, Dockerfile, .dockerignore and deploy/nginx: loaded
//     with compose-go, the library Docker Compose uses (compose_test.go);
//   - deploy/k8s and deploy/k8s-production: rendered with the kustomize
//     library (k8s_test.go);
//   - deploy/helm/bayeux: rendered with the Helm SDK for its default values,
//     each Redis mode and everything optional switched on, linted, and its
//     schema shown to reject typos (helm_test.go).
//
// Every rendering is decoded strictly into the Kubernetes types and passes
// the same semantic checks (checks_test.go, checks_edge_test.go), so a
// broken deployment is caught without a cluster or a Docker engine.
package deploy
