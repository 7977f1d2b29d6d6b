// One StorageV2 account, reached with Entra tokens only (shared keys disabled):
// - blob: the Functions host's own storage (keys, leases, timer checkpoints) and the Flex
//   Consumption deployment container; no queues: the app has no queue or blob trigger;
// - table: the SCIM directory (SCIM_TABLE_ENDPOINT), its tables created here up front.
// Log Analytics receives the blob service's request logs and both services' metrics, but no
// table request logs: StorageTableLogs record each request's URI, and the URIs hold the
// PartitionKeys and RowKeys, which carry userNames, emails, externalIds and display names
// (docs/table-layout.md). See docs/deployment.md, "Logs and personal data".

@description('Region of the account.')
param location string

@description('Tags applied to the account.')
param tags object

@minLength(3)
@maxLength(24)
@description('Globally unique account name: 3-24 lowercase letters and digits.')
param name string

@description('Blob container that Flex Consumption deploys the app package from.')
param deploymentContainerName string

@allowed([
  'Standard_GRS'
  'Standard_GZRS'
  'Standard_ZRS'
  'Standard_LRS'
])
@description('Replication. Geo-redundant by default (the tenants table holds every tenant\'s token hash); regions without a paired region offer only LRS/ZRS.')
param skuName string = 'Standard_GRS'

@description('Names of the tables the app uses.')
param tableNames array

@description('Resource ID of the Log Analytics workspace that receives the diagnostic logs.')
param logAnalyticsId string

// API version 2025-06-01: the one Azure Verified Modules pin (avm/res/storage/storage-account,
// main.bicep); a newer one is missing from the Bicep type snapshot most tools bundle (BCP081).
resource storage 'Microsoft.Storage/storageAccounts@2025-06-01' = {
  // checkov:skip=CKV_AZURE_35: without VNet integration Flex Consumption reaches its storage over the public endpoint, and so does the admin CLI; requests still need an Entra token and an RBAC role (shared keys are off).
  // checkov:skip=CKV_AZURE_59: public network access is needed for the same reason as CKV_AZURE_35; access remains Entra-only and role-scoped.
  name: name
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: skuName
  }
  properties: {
    accessTier: 'Hot'
    allowBlobPublicAccess: false
    allowSharedKeyAccess: false
    defaultToOAuthAuthentication: true
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: 'Allow'
    }
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2025-06-01' = {
  parent: storage
  name: 'default'
  properties: {
    deleteRetentionPolicy: {
      enabled: true
      days: 7
    }
    containerDeleteRetentionPolicy: {
      enabled: true
      days: 7
    }
  }
}

resource deploymentContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2025-06-01' = {
  parent: blobService
  name: deploymentContainerName
  properties: {
    publicAccess: 'None'
  }
}

resource tableService 'Microsoft.Storage/storageAccounts/tableServices@2025-06-01' = {
  parent: storage
  name: 'default'
}

resource tables 'Microsoft.Storage/storageAccounts/tableServices/tables@2025-06-01' = [for tableName in tableNames: {
  parent: tableService
  name: tableName
}]

// Diagnostic settings use 2021-05-01-preview, the version and body shape Azure Verified Modules
// use (avm/res/storage/storage-account/blob-service: logs by category, metrics by category); the
// 2016-09-01 contract is the legacy one (name 'service', a location, timeGrain on metrics).
// Blob request logs name the Functions host's own blobs (leases, keys, timer state, the app
// package) and the caller, the app's identity: no directory data.
resource blobDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: blobService
  properties: {
    workspaceId: logAnalyticsId
    logs: [
      {
        category: 'StorageRead'
        enabled: true
      }
      {
        category: 'StorageWrite'
        enabled: true
      }
      {
        category: 'StorageDelete'
        enabled: true
      }
    ]
    metrics: [
      {
        category: 'Transaction'
        enabled: true
      }
    ]
  }
}

// Metrics only (transactions, latency, availability by API and response type carry no keys).
// No StorageRead/StorageWrite/StorageDelete: their URIs would put directory keys in Log Analytics.
resource tableDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: tableService
  properties: {
    workspaceId: logAnalyticsId
    logs: []
    metrics: [
      {
        category: 'Transaction'
        enabled: true
      }
    ]
  }
}

output name string = storage.name
output blobEndpoint string = storage.properties.primaryEndpoints.blob
output tableEndpoint string = storage.properties.primaryEndpoints.table
output deploymentContainerUrl string = '${storage.properties.primaryEndpoints.blob}${deploymentContainer.name}'
