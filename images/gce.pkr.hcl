# GCE image in family garo-runner-<arch>, built from Ubuntu 24.04 LTS.
source "googlecompute" "runner" {
  project_id              = var.gcp_project_id
  zone                    = var.gcp_zone
  source_image_project_id = [var.gcp_source_image_project]
  source_image_family     = var.gcp_source_image_family[var.arch]
  machine_type            = var.gcp_machine_type[var.arch]
  subnetwork              = var.gcp_subnetwork
  omit_external_ip        = var.gcp_subnetwork != ""
  use_internal_ip         = var.gcp_subnetwork != ""
  disk_size               = 30
  disk_type               = "pd-balanced"
  ssh_username            = "packer"

  image_name        = local.image_name
  image_family      = "${var.gcp_image_family}-${var.arch}"
  image_description = "Garo runner: Ubuntu 24.04, actions/runner ${var.runner_version} (${var.arch})"
  image_labels      = local.labels
  labels            = { garo-image-build = "true" }

  enable_secure_boot          = true
  enable_vtpm                 = true
  enable_integrity_monitoring = true
}
