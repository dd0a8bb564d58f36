"""Model endpoint profiles: `models: {writer: {profile: vllm, model: ...}}` starts from configs/vllm.yaml."""
