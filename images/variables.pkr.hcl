# Inputs shared by the GCE and AMI builds. Pin and roll the runner here (or
# with -var): see docs/images.md "Pinning and rolling the runner".

variable "arch" {
  type        = string
  default     = "x64"
  description = "Runner architecture: x64 or arm64 (actions/runner asset naming)."
  validation {
    condition     = contains(["x64", "arm64"], var.arch)
    error_message = "The arch variable must be x64 or arm64."
  }
}

variable "runner_version" {
  type        = string
  default     = "2.338.0"
  description = "actions/runner release, without the leading v."
  validation {
    # No regex(): Debian's packer 1.6 lacks it; trim() leaves "" only for digits and dots.
    condition     = length(split(".", var.runner_version)) == 3 && trim(var.runner_version, "0123456789.") == ""
    error_message = "The runner_version variable must look like 2.338.0."
  }
}

# SHA-256 of actions-runner-linux-<arch>-<runner_version>.tar.gz as published
# in the release notes (<!-- BEGIN SHA linux-x64 --> ...). Change together
# with runner_version; docs/images.md says how these were checked.
variable "runner_sha256" {
  type        = map(string)
  description = "Per-architecture SHA-256 of the runner tarball for runner_version."
  default = {
    x64   = "af4b794c1bc41d73d40535e3fe092a39f9679cd8d965954c2aca25a05ca41d32"
    arm64 = "628b4a7258487b80c1d3c221095a7ded349f5ae0175fd3dfab708d07428f041b"
  }
  validation {
    condition = (length(lookup(var.runner_sha256, "x64", "")) == 64
      && trim(lookup(var.runner_sha256, "x64", ""), "0123456789abcdef") == ""
      && length(lookup(var.runner_sha256, "arm64", "")) == 64
    && trim(lookup(var.runner_sha256, "arm64", ""), "0123456789abcdef") == "")
    error_message = "The runner_sha256 variable needs x64 and arm64 entries of 64 lowercase hex digits."
  }
}

variable "runner_sudo" {
  type        = bool
  default     = true
  description = "Passwordless sudo for the job user (like GitHub-hosted runners; the VM is single-use)."
}

variable "runner_hooks" {
  type        = bool
  default     = false
  description = "Run garo-runner/hooks/job-started.sh and job-completed.sh around every job (ACTIONS_RUNNER_HOOK_JOB_*)."
}

variable "image_os" {
  type        = string
  default     = "ubuntu24"
  description = "ImageOS in the runner's .env, as on GitHub-hosted runners (setup-python and friends read it)."
}

variable "aws_cli_version" {
  type        = string
  default     = "2.36.11"
  description = "AWS CLI v2 release for the AMI (the boot agent's SSM and EC2 calls); its PGP signature is checked."
  validation {
    condition     = length(split(".", var.aws_cli_version)) == 3 && trim(var.aws_cli_version, "0123456789.") == ""
    error_message = "The aws_cli_version variable must look like 2.36.11."
  }
}

variable "logging_agent" {
  type        = string
  default     = "default"
  description = "default: install the cloud's logging agent (GCE: Ops Agent; AWS: none yet); none: skip."
  validation {
    condition     = contains(["default", "none"], var.logging_agent)
    error_message = "The logging_agent variable must be default or none."
  }
}

variable "image_labels" {
  type        = map(string)
  default     = {}
  description = "Extra labels (GCE) / tags (AWS) on the image, e.g. a build id."
}

# ---- GCE ----

variable "gcp_project_id" {
  type        = string
  default     = ""
  description = "Project that builds and owns the image (required for the googlecompute build)."
}

variable "gcp_zone" {
  type    = string
  default = "europe-west1-b"
}

variable "gcp_image_family" {
  type        = string
  default     = "garo-runner"
  description = "Image family prefix; the architecture is appended (garo-runner-x64)."
}

variable "gcp_source_image_project" {
  type    = string
  default = "ubuntu-os-cloud"
}

variable "gcp_source_image_family" {
  type = map(string)
  default = {
    x64   = "ubuntu-2404-lts-amd64"
    arm64 = "ubuntu-2404-lts-arm64"
  }
}

variable "gcp_machine_type" {
  type = map(string)
  default = {
    x64   = "e2-standard-4"
    arm64 = "t2a-standard-4"
  }
}

variable "gcp_subnetwork" {
  type        = string
  default     = ""
  description = "Build in this subnetwork (no external IP then); empty: the default network."
}

# ---- AWS ----

variable "aws_region" {
  type    = string
  default = "eu-west-1"
}

variable "aws_source_ami_owner" {
  type        = string
  default     = "099720109477"
  description = "Canonical's AWS account."
}

variable "aws_source_ami_name" {
  type = map(string)
  default = {
    x64   = "ubuntu/images/hvm-ssd-gp3/ubuntu-noble-24.04-amd64-server-*"
    arm64 = "ubuntu/images/hvm-ssd-gp3/ubuntu-noble-24.04-arm64-server-*"
  }
}

variable "aws_instance_type" {
  type = map(string)
  default = {
    x64   = "m7i.large"
    arm64 = "m7g.large"
  }
}

variable "aws_subnet_id" {
  type    = string
  default = ""
}

variable "aws_ami_regions" {
  type        = list(string)
  default     = []
  description = "Extra regions to copy the AMI to."
}

locals {
  # Image names carry the runner version and the build time (UTC).
  build_time    = formatdate("YYYYMMDD-hhmmss", timestamp())
  version_label = replace(var.runner_version, ".", "-")
  image_name    = "garo-runner-${var.arch}-${local.version_label}-${local.build_time}"
  # GCE label values allow [a-z0-9_-] only, hence the dashed version.
  labels = merge(var.image_labels, {
    garo-image          = "runner"
    garo-arch           = var.arch
    garo-runner-version = local.version_label
    garo-base           = "ubuntu-24-04"
  })
}
