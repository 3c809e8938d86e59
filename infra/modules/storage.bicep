// Two storage accounts. The relay's: Functions host state (AzureWebJobsStorage), the relay's
// tables, queues and claim-check payload blobs. The package account: only the Flex Consumption
// deployment container, so that the app identity, which needs Storage Blob Data Owner on the
// relay's account (host leases and keys), holds no role at all where its code is kept (a role
// scoped to an account also grants container-level control-plane actions, such as deleting a
// container, that no ABAC condition restricts).
// Shared-key access is off on both; everything reaches them with Entra ID.
// Child resources are declared at top level with `parent:` (never nested).

@description('Name of the storage account (3-24 lowercase letters and digits, globally unique).')
@minLength(3)
@maxLength(24)
param name string

@description('Azure region of the storage account.')
param location string

@description('Tags applied to the storage account.')
param tags object = {}

@description('Name of the storage account that holds only the deployment package (3-24 lowercase letters and digits).')
@minLength(3)
@maxLength(24)
param packageAccountName string

@description('Blob container of the package account that holds the Flex Consumption deployment package.')
param deploymentContainerName string

@description('Redundancy of both accounts (Standard_ZRS for production: a zone outage loses nothing).')
@allowed([
  'Standard_LRS'
  'Standard_ZRS'
  'Standard_GRS'
  'Standard_GZRS'
])
param skuName string = 'Standard_LRS'

@description('Days deleted or overwritten blobs and deleted containers can be restored (soft delete).')
@minValue(1)
@maxValue(365)
param softDeleteDays int = 7

@description('Days after their last modification at which claim-check payload blobs are deleted: the event retention plus the whole retry schedule (a replay late in the retention is retried that long).')
@minValue(1)
param payloadRetentionDays int

@description('Enabled: reachable from the internet (with Entra ID only). Disabled: only through the private endpoints of network.bicep.')
@allowed([
  'Enabled'
  'Disabled'
])
param publicNetworkAccess string = 'Enabled'

// Names the relay uses (relay/store/storage.py).
var tableNames = [
  'relaysubscriptions'
  'relayevents'
  'relaydeliveries'
  'relayeventtypes'
  'relayoperations'
  'relaykeys'
  'relaydue'
]

// Work queues and their poison queues (`<queue>-poison`, where the host moves messages that
// failed maxDequeueCount times).
var queueNames = [
  'relay-fanout'
  'relay-deliveries'
  'relay-replays'
  'relay-fanout-poison'
  'relay-deliveries-poison'
  'relay-replays-poison'
]

var payloadContainerName = 'relay-payloads'

var accountProperties = {
  accessTier: 'Hot'
  allowBlobPublicAccess: false
  allowSharedKeyAccess: false
  allowCrossTenantReplication: false
  defaultToOAuthAuthentication: true
  minimumTlsVersion: 'TLS1_2'
  supportsHttpsTrafficOnly: true
  publicNetworkAccess: publicNetworkAccess
  networkAcls: {
    bypass: 'AzureServices'
    defaultAction: (publicNetworkAccess == 'Enabled') ? 'Allow' : 'Deny'
  }
}

// Soft delete: a blob deleted or overwritten by mistake (or by a compromised identity) can be
// restored for softDeleteDays; so can a deleted container.
var blobServiceProperties = {
  deleteRetentionPolicy: {
    enabled: true
    days: softDeleteDays
  }
  containerDeleteRetentionPolicy: {
    enabled: true
    days: softDeleteDays
  }
}

resource storageAccount 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: name
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: skuName
  }
  properties: accountProperties
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: storageAccount
  name: 'default'
  properties: blobServiceProperties
}

resource packageAccount 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: packageAccountName
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: skuName
  }
  properties: accountProperties
}

resource packageBlobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: packageAccount
  name: 'default'
  properties: blobServiceProperties
}

resource deploymentContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: packageBlobService
  name: deploymentContainerName
  properties: {
    publicAccess: 'None'
  }
}

resource payloadContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: payloadContainerName
  properties: {
    publicAccess: 'None'
  }
}

resource tableService 'Microsoft.Storage/storageAccounts/tableServices@2023-05-01' = {
  parent: storageAccount
  name: 'default'
}

resource tables 'Microsoft.Storage/storageAccounts/tableServices/tables@2023-05-01' = [for tableName in tableNames: {
  parent: tableService
  name: tableName
}]

resource queueService 'Microsoft.Storage/storageAccounts/queueServices@2023-05-01' = {
  parent: storageAccount
  name: 'default'
}

resource queues 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = [for queueName in queueNames: {
  parent: queueService
  name: queueName
}]

// Claim-check bodies of large events: an event can be replayed until the end of its retention
// and each replayed delivery retried for the whole schedule after that, so a body is kept for
// the retention plus the schedule (main.bicep computes payloadRetentionDays) and deleted then.
resource lifecycle 'Microsoft.Storage/storageAccounts/managementPolicies@2023-05-01' = {
  parent: storageAccount
  name: 'default'
  properties: {
    policy: {
      rules: [
        {
          name: 'delete-expired-relay-payloads'
          enabled: true
          type: 'Lifecycle'
          definition: {
            filters: {
              blobTypes: [
                'blockBlob'
              ]
              prefixMatch: [
                '${payloadContainerName}/'
              ]
            }
            actions: {
              baseBlob: {
                delete: {
                  daysAfterModificationGreaterThan: payloadRetentionDays
                }
              }
            }
          }
        }
      ]
    }
  }
  dependsOn: [
    payloadContainer
  ]
}

@description('Name of the storage account.')
output name string = storageAccount.name

@description('Resource id of the storage account.')
output id string = storageAccount.id

@description('Name of the package storage account.')
output packageAccountName string = packageAccount.name

@description('URL of the deployment container (functionAppConfig.deployment.storage.value).')
output deploymentContainerUrl string = '${packageAccount.properties.primaryEndpoints.blob}${deploymentContainer.name}'
